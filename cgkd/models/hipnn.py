"""HIP-NN-TS: hierarchically interacting particle network with tensor sensitivity.

Equations follow the hippynn formulation (see REFERENCES.md): inverse-distance
Gaussian sensitivities with a cos^2 cutoff, interaction layers whose environment sum
is weight-tied across tensor orders l = 0, 1, 2, dense "atom" layers, and a
hierarchical energy: every layer (the one-hot species layer included) reads out a
per-bead energy and the bead energy is their sum. Lengths are nm, energies kJ/mol.
"""

from __future__ import annotations

import math

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


class InteractionLayer(nn.Module):
    """One HIP-NN-TS interaction layer (scalar environment sum plus tensor terms up to ``order``).

    z'_ia = sum_j q_ija + sum_b W_ab z_ib + B_a + t1_a |sum_j q_ija rhat_ij|
            + t2_a ||sum_j q_ija (rhat rhat^T - I/3)||_F,
    with q_ija = sum_nu,b s_nu(r_ij) V_nu,a,b z_jb the weight-tied pair message.

    Two equivalent evaluation orders are used, whichever is cheaper: when the input is
    narrow (the first layer reads one-hot species) the environment sum over pairs is
    formed first and contracted with V once per bead; otherwise every bead's features
    are projected by V first and only n_out numbers travel along each pair.
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
        self.environment_first = n_in < n_out

    def forward(self, features: Tensor, first: Tensor, second: Tensor, vectors: Tensor) -> Tensor:
        """New features [M, n_out] from features [M, n_in] and pairs (first <- second)."""
        distances = torch.linalg.norm(vectors, dim=-1)
        sensitivities = self.sensitivity(distances)
        unit = vectors / distances.unsqueeze(1)
        n_beads = features.shape[0]
        if self.environment_first:
            # [P, nu * n_in] pair terms, summed per bead, then one product with V.
            pair_terms = (sensitivities.unsqueeze(2) * features[second].unsqueeze(1)).flatten(1)
            weights = self.pair_weights.reshape(self.n_sensitivities * self.n_in, self.n_out)
        else:
            # Project every bead once by V, then contract per pair with its sensitivities.
            projected = features @ self.pair_weights.permute(1, 0, 2).reshape(self.n_in, -1)
            projected = projected.view(n_beads, self.n_sensitivities, self.n_out)
            pair_terms = torch.bmm(sensitivities.unsqueeze(1), projected[second]).squeeze(1)
            weights = torch.eye(self.n_out, dtype=features.dtype, device=features.device)
        # One environment sum carries every tensor order: columns are 1 (scalar), then
        # rhat (3) for l >= 1, then the traceless rhat rhat^T in an orthonormal basis (5) for l = 2.
        directions = _directions(unit, self.order)
        width = pair_terms.shape[1]
        pair_values = (directions.unsqueeze(2) * pair_terms.unsqueeze(1)).flatten(1)
        environment = torch.zeros(
            n_beads, pair_values.shape[1], dtype=features.dtype, device=features.device
        )
        environment = (
            environment.index_add(0, first, pair_values).view(n_beads, -1, width) @ weights
        )
        out = self.self_interaction(features) + environment[:, 0]
        if self.order >= 1:
            out = out + self.tensor_weights[0] * _norm(environment[:, 1:4])
        if self.order == 2:
            out = out + self.tensor_weights[1] * _norm(environment[:, 4:9])
        return out


def _directions(unit: Tensor, order: int) -> Tensor:
    """Angular factors [P, 1 | 4 | 9] of unit pair vectors [P, 3] up to tensor ``order``.

    The l = 2 part holds rhat rhat^T - I/3 in an orthonormal basis of symmetric
    traceless matrices, so its Euclidean norm equals the Frobenius norm of the matrix.
    """
    ones = torch.ones_like(unit[:, :1])
    if order == 0:
        return ones
    if order == 1:
        return torch.cat([ones, unit], dim=1)
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    root2 = math.sqrt(2.0)
    quadrupole = torch.stack(
        [
            root2 * x * y,
            root2 * x * z,
            root2 * y * z,
            (x * x - y * y) / root2,
            (2.0 * z * z - x * x - y * y) / math.sqrt(6.0),
        ],
        dim=1,
    )
    return torch.cat([ones, unit, quadrupole], dim=1)


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

    def forward(self, features: Tensor, first: Tensor, second: Tensor, vectors: Tensor) -> Tensor:
        """Features after this block, [M, n_features]."""
        out = nn.functional.softplus(self.interaction(features, first, second, vectors))
        for layer in self.atom_layers:
            out = out + nn.functional.softplus(layer(out))
        return out


class HipnnTS(nn.Module):
    """HIP-NN-TS network: per-bead energies (kJ/mol) from species and neighbour pairs.

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
        energies = [self.species_energy(features).squeeze(-1)]
        for block, readout in zip(self.blocks, self.readouts, strict=True):
            features = block(features, first, second, vectors)
            energies.append(readout(features).squeeze(-1))
        return torch.stack(energies) * self.energy_scale

    def forward(self, species: Tensor, first: Tensor, second: Tensor, vectors: Tensor) -> Tensor:
        """Bead energies [M] in kJ/mol for flat beads with ``species`` [M] and pairs."""
        return self.hierarchical_energies(species, first, second, vectors).sum(0)
