"""HIP-NN-TS: hierarchically interacting particle network with tensor sensitivity.

Equations follow the hippynn formulation (see REFERENCES.md): inverse-distance
Gaussian sensitivities with a cos^2 cutoff, interaction layers whose environment sum
is weight-tied across tensor orders l = 0, 1, 2, dense "atom" layers, and a
hierarchical energy: every layer (the one-hot species layer included) reads out a
per-bead energy and the bead energy is their sum. Lengths are nm, energies kJ/mol.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


def cosine_cutoff(distances: Tensor, cutoff: float) -> Tensor:
    """phi(r) = cos^2(pi r / (2 r_c)) for r <= r_c, else 0 (dimensionless)."""
    phi = torch.cos(0.5 * math.pi * distances / cutoff) ** 2
    return torch.where(distances <= cutoff, phi, torch.zeros_like(phi))


class InverseSensitivity(nn.Module):
    """s_nu(r) = exp(-sigma_nu^2 (1/r - 1/mu_nu)^2 / 2) phi(r), with learnable mu and sigma."""

    def __init__(self, n_sensitivities: int, soft_min: float, soft_max: float, cutoff: float):
        super().__init__()
        inverse_mu = torch.linspace(1.0 / soft_max, 1.0 / soft_min, n_sensitivities)
        self.inverse_mu = nn.Parameter(inverse_mu)
        self.sigma = nn.Parameter(torch.full((n_sensitivities,), 2.0 * n_sensitivities * soft_min))
        self.cutoff = cutoff

    def forward(self, distances: Tensor) -> Tensor:
        """Sensitivities [P, n_sensitivities] for pair distances [P] (nm)."""
        scaled = (1.0 / distances.unsqueeze(1) - self.inverse_mu.unsqueeze(0)) * self.sigma
        return torch.exp(-0.5 * scaled * scaled) * cosine_cutoff(distances, self.cutoff).unsqueeze(
            1
        )


class PairLayout(NamedTuple):
    """Directed pairs ``first <- second`` of M beads, prepared once for all interaction layers.

    For tensor order >= 1 the environment sums over each bead's pairs are batched matrix
    products over a padded [M, K] layout, K the largest number of pairs of one bead: pair
    p sits in slot ``slot[p]`` of the flattened [M * K] layout (row first[p]); the pair
    values in the other slots are zeros. For order 0 the sums are scatter-adds over
    ``first``.
    """

    order: int  # tensor order
    first: Tensor  # [P] bead whose environment holds the pair, sorted ascending
    second: Tensor  # [P] neighbour bead
    distances: Tensor  # [P] nm
    slot: Tensor  # [P] first * K + rank of the pair among those of its bead (order >= 1)
    width: int  # K (order >= 1)
    directions: Tensor  # [M, 4 | 9, K] angular factors (see _directions) (order >= 1)


def pair_layout(
    first: Tensor, second: Tensor, vectors: Tensor, n_beads: int, order: int
) -> PairLayout:
    """The layout of directed pairs ``first <- second`` with vectors [P, 3] (nm) between
    ``n_beads`` beads, for tensor ``order``; differentiable w.r.t. ``vectors``.

    ``first`` must be sorted ascending, as :func:`cgkd.models.neighbors.neighbor_pairs`
    returns it (ValueError otherwise).
    """
    n_pairs = first.shape[0]
    if n_pairs > 1 and bool(torch.any(first[1:] < first[:-1])):
        raise ValueError(
            "pairs must be sorted by first bead; see cgkd.models.neighbors.canonical_order"
        )
    distances = torch.linalg.norm(vectors, dim=1)
    if order == 0:
        return PairLayout(order, first, second, distances, first, 0, vectors.new_zeros(0))
    counts = torch.bincount(first, minlength=n_beads)
    width = int(counts.max()) if n_pairs > 0 else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = first * width + torch.arange(n_pairs, device=first.device)
    slot = slot - starts.index_select(0, first)
    # Unit pair vectors, coordinate-major [3, M * K] (zero in empty slots, whose pair values
    # are zero too).
    shape = (n_beads, width)
    unit = torch.zeros(3, n_beads * width, dtype=vectors.dtype, device=vectors.device)
    unit.index_copy_(1, slot, vectors.t() / distances)
    x, y, z = unit[0].view(shape), unit[1].view(shape), unit[2].view(shape)
    ones = torch.ones(shape, dtype=vectors.dtype, device=vectors.device)
    directions = _directions(ones, x, y, z, order, 1)
    return PairLayout(order, first, second, distances, slot, width, directions)


def _environment(values: Tensor, pairs: PairLayout, n_beads: int) -> Tensor:
    """Sums over each bead's pairs of pair values [P, C] times every angular factor:
    [M, 1 | 4 | 9, C]."""
    n_values = values.shape[1]
    if pairs.order == 0:
        sums = torch.zeros(n_beads, n_values, dtype=values.dtype, device=values.device)
        return sums.index_add_(0, pairs.first, values).unsqueeze(1)
    padded = torch.zeros(n_beads * pairs.width, n_values, dtype=values.dtype, device=values.device)
    padded.index_copy_(0, pairs.slot, values)
    padded = padded.view(n_beads, pairs.width, n_values)
    return torch.bmm(pairs.directions, padded)


class InteractionLayer(nn.Module):
    """One HIP-NN-TS interaction layer (scalar environment sum plus tensor terms up to ``order``).

    z'_ia = sum_j q_ija + sum_b W_ab z_ib + B_a + t1_a |sum_j q_ija rhat_ij|
            + t2_a ||sum_j q_ija (rhat rhat^T - I/3)||_F,
    with q_ija = sum_nu,b s_nu(r_ij) V_nu,a,b z_jb the weight-tied pair message.

    Two equivalent evaluation orders are used, whichever is cheaper: when the input is
    narrow (the first layer reads one-hot species) the pair terms s_nu(r_ij) z_jb are
    summed over each bead's pairs first and contracted with V once per bead; otherwise
    every bead's features are projected by V first and only n_out numbers travel along
    each pair. For l >= 1 the sums over pairs with the angular factors are batched matrix
    products over a padded per-bead layout (:class:`PairLayout`), so that no tensor of
    pair values times angular factors is formed.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        n_sensitivities: int,
        soft_min: float,
        soft_max: float,
        cutoff: float,
        order: int,
    ):
        super().__init__()
        if order not in (0, 1, 2):
            raise ValueError(f"tensor order {order} is not supported; use 0, 1 or 2")
        self.sensitivity = InverseSensitivity(n_sensitivities, soft_min, soft_max, cutoff)
        scale = 1.0 / math.sqrt(n_in * n_sensitivities)
        self.pair_weights = nn.Parameter(torch.randn(n_sensitivities, n_in, n_out) * scale)
        self.self_interaction = nn.Linear(n_in, n_out)
        self.tensor_weights = nn.Parameter(torch.zeros(2, n_out))
        self.order = order
        self.n_in = n_in
        self.n_out = n_out
        self.n_sensitivities = n_sensitivities
        # Per pair, environment-first forms nu * n_in pair terms and sums them with each of
        # the D = 1, 4 or 9 angular factors; projection-first gathers nu * n_out projected
        # features and contracts them with the sensitivities (measured on CPU).
        self.environment_first = n_in * ((1, 4, 9)[order] + 1) < 2 * n_out

    def forward(self, features: Tensor, first: Tensor, second: Tensor, vectors: Tensor) -> Tensor:
        """New features [M, n_out] from features [M, n_in] and pairs (first <- second,
        vectors [P, 3] in nm, ``first`` sorted ascending)."""
        pairs = pair_layout(first, second, vectors, features.shape[0], self.order)
        return self.layout_forward(features, pairs)

    def layout_forward(self, features: Tensor, pairs: PairLayout) -> Tensor:
        """New features [M, n_out] from features [M, n_in] and prepared pairs."""
        n_beads, n_pairs = features.shape[0], pairs.first.shape[0]
        sensitivities = self.sensitivity(pairs.distances)
        if self.environment_first:
            # [P, nu * n_in] pair terms, summed per bead, then one product with V.
            neighbours = features.index_select(0, pairs.second)
            pair_terms = sensitivities.unsqueeze(2) * neighbours.unsqueeze(1)
            pair_terms = pair_terms.view(n_pairs, self.n_sensitivities * self.n_in)
            weights = self.pair_weights.reshape(self.n_sensitivities * self.n_in, self.n_out)
            environment = _environment(pair_terms, pairs, n_beads) @ weights
        else:
            # Project every bead once by V, then contract per pair with its sensitivities.
            projected = features @ self.pair_weights.permute(1, 0, 2).reshape(self.n_in, -1)
            projected = projected.view(n_beads, self.n_sensitivities, self.n_out)
            messages = torch.bmm(
                sensitivities.unsqueeze(1), projected.index_select(0, pairs.second)
            ).squeeze(1)
            environment = _environment(messages, pairs, n_beads)
        return self.combine(features, environment)

    def combine(self, features: Tensor, environment: Tensor) -> Tensor:
        """The layer's output [M, n_out] from its input features [M, n_in] and its pair sums
        [M, 1 | 4 | 9, n_out]: the scalar sum, then rhat (3) for l >= 1, then the traceless
        rhat rhat^T in an orthonormal basis (5) for l = 2."""
        out = self.self_interaction(features) + environment[:, 0]
        if self.order >= 1:
            out = out + self.tensor_weights[0] * _norm(environment[:, 1:4])
        if self.order == 2:
            out = out + self.tensor_weights[1] * _norm(environment[:, 4:9])
        return out


def _directions(one: Tensor, x: Tensor, y: Tensor, z: Tensor, order: int, dim: int) -> Tensor:
    """Angular factors of unit pair vectors (x, y, z) up to tensor ``order``, stacked along
    ``dim`` (1, 4 or 9 of them): ``one`` (ones), then x, y, z for l >= 1, then for l = 2
    rhat rhat^T - I/3 in an orthonormal basis of symmetric traceless matrices, so that
    their Euclidean norm is the Frobenius norm of the matrix.
    """
    factors = [one]
    if order >= 1:
        factors += [x, y, z]
    if order == 2:
        root2 = math.sqrt(2.0)
        xx, yy, zz = x * x, y * y, z * z
        factors += [
            root2 * x * y,
            root2 * x * z,
            root2 * y * z,
            (xx - yy) / root2,
            (2.0 * zz - xx - yy) / math.sqrt(6.0),
        ]
    return torch.stack(factors, dim)


def _norm(tensor_features: Tensor) -> Tensor:
    """Rotation-invariant norm over the tensor axis of [M, D, W] (floored for smooth gradients)."""
    return torch.sqrt(torch.sum(tensor_features * tensor_features, dim=1) + 1e-8)


class Block(nn.Module):
    """An interaction layer followed by dense softplus atom layers (residual when shapes allow)."""

    def __init__(self, interaction: InteractionLayer, n_features: int, n_atom_layers: int):
        super().__init__()
        self.interaction = interaction
        self.atom_layers = nn.ModuleList(
            [nn.Linear(n_features, n_features) for _ in range(n_atom_layers)]
        )

    def forward(self, features: Tensor, pairs: PairLayout) -> Tensor:
        """Features after this block, [M, n_features]."""
        return self.atoms(self.interaction.layout_forward(features, pairs))

    def atoms(self, interaction_out: Tensor) -> Tensor:
        """Features after this block from its interaction layer's output, [M, n_features]."""
        out = nn.functional.softplus(interaction_out)
        for layer in self.atom_layers:
            out = out + nn.functional.softplus(layer(out))
        return out


class HipnnTS(nn.Module):
    """HIP-NN-TS network: per-bead energies (kJ/mol) from species and neighbour pairs.

    The directed pairs (first <- second, vectors x_second - x_first in nm) must be sorted
    by ``first`` ascending, as :func:`cgkd.models.neighbors.neighbor_pairs` returns them
    (a ValueError otherwise): they are laid out once per call (:func:`pair_layout`) for
    all interaction layers.

    Args:
        n_species: number of bead types.
        n_features: width of every interaction and atom layer.
        n_sensitivities: number of distance sensitivities per interaction layer.
        n_interactions: number of interaction blocks.
        n_atom_layers: dense layers after each interaction.
        tensor_order: 0 (HIP-NN), 1 or 2 (HIP-NN-TS).
        cutoff, soft_min, soft_max: sensitivity cutoff and range, nm.
        energy_scale: kJ/mol multiplying the network output (set from the data before training).
    """

    def __init__(
        self,
        n_species: int,
        n_features: int = 32,
        n_sensitivities: int = 16,
        n_interactions: int = 1,
        n_atom_layers: int = 2,
        tensor_order: int = 2,
        cutoff: float = 0.6,
        soft_min: float = 0.22,
        soft_max: float = 0.55,
        energy_scale: float = 1.0,
    ):
        super().__init__()
        if not 0 < soft_min < soft_max <= cutoff:
            raise ValueError(
                f"need 0 < soft_min ({soft_min}) < soft_max ({soft_max}) <= cutoff ({cutoff}) in nm"
            )
        self.n_species = n_species
        self.cutoff = cutoff
        self.tensor_order = tensor_order
        blocks = []
        n_in = n_species
        for _ in range(n_interactions):
            interaction = InteractionLayer(
                n_in, n_features, n_sensitivities, soft_min, soft_max, cutoff, tensor_order
            )
            blocks.append(Block(interaction, n_features, n_atom_layers))
            n_in = n_features
        self.blocks = nn.ModuleList(blocks)
        self.species_energy = nn.Linear(n_species, 1, bias=False)
        self.readouts = nn.ModuleList([nn.Linear(n_features, 1) for _ in range(n_interactions)])
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale)))

    def hierarchical_energies(
        self, species: Tensor, first: Tensor, second: Tensor, vectors: Tensor
    ) -> Tensor:
        """Per-layer bead energies [n_interactions + 1, M] in kJ/mol (layer 0: species offsets)."""
        features = nn.functional.one_hot(species, self.n_species).to(vectors.dtype)
        pairs = pair_layout(first, second, vectors, features.shape[0], self.tensor_order)
        energies = [self.species_energy(features).squeeze(-1)]
        for block, readout in zip(self.blocks, self.readouts, strict=True):
            features = block(features, pairs)
            energies.append(readout(features).squeeze(-1))
        return torch.stack(energies) * self.energy_scale

    def forward(self, species: Tensor, first: Tensor, second: Tensor, vectors: Tensor) -> Tensor:
        """Bead energies [M] in kJ/mol for flat beads with ``species`` [M] and pairs sorted
        by ``first``."""
        return self.hierarchical_energies(species, first, second, vectors).sum(0)
