"""A CG potential: one or more HIP-NN-TS networks (an ensemble's mean) plus priors.

The energy of an ensemble is the mean of its members' energies, so its forces are the
mean of their forces. All members share one neighbour list and one set of priors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cgkd.models.hipnn import HipnnTS
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.pair_table import PairTable
from cgkd.models.priors import HarmonicAngles, HarmonicBonds, Priors


class CGPotential(nn.Module):
    """Per-bead energies (kJ/mol) for batches of frames of one CG system.

    Args:
        networks: ensemble members (one for a single model); all must share the cutoff.
        priors: repulsion, bonds and angles added to every member, or None.
        pair_table: tabulated pair energies added to every member, or None; a potential with a
            table and no networks is a classical force-matched model.
    """

    def __init__(
        self,
        networks: list[HipnnTS],
        priors: Priors | None = None,
        pair_table: PairTable | None = None,
    ):
        super().__init__()
        if not networks and pair_table is None:
            raise ValueError("a CGPotential needs at least one network or a pair table")
        cutoffs = {net.cutoff for net in networks}
        if len(cutoffs) > 1:
            raise ValueError(
                f"ensemble members have different cutoffs {sorted(cutoffs)} nm; use one"
            )
        if pair_table is not None:
            cutoffs.add(pair_table.cutoff)
        self.cutoff = max(cutoffs)
        if priors is not None and priors.reach > self.cutoff:
            raise ValueError(
                f"the repulsion prior reaches {priors.reach:.3f} nm, beyond the model cutoff "
                f"{self.cutoff} nm; raise the cutoff or lower prior.repulsion.switch_factor"
            )
        self.networks = nn.ModuleList(networks)
        self.use_priors = priors is not None
        self.priors = priors if priors is not None else _no_priors()
        self.use_pair_table = pair_table is not None
        self.pair_table = pair_table if pair_table is not None else _no_table()

    def _pairs_and_priors(
        self,
        positions: Tensor,
        boxes: Tensor,
        species: Tensor,
        pairs: tuple[Tensor, Tensor, Tensor] | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Flat species [B * N], neighbour pairs (first, second, vectors; searched unless
        ``pairs`` gives them) and the bead energies [B * N] every member shares: priors and
        pair table (zeros without either)."""
        n_frames = positions.shape[0]
        if pairs is None:
            first, second, vectors = neighbor_pairs(positions, boxes, self.cutoff)
        else:
            first, second, vectors = pairs
        flat_species = species.repeat(n_frames)
        if self.use_priors:
            prior = self.priors(positions, boxes, flat_species, first, second, vectors)
        else:
            prior = torch.zeros(
                flat_species.shape[0], dtype=positions.dtype, device=positions.device
            )
        if self.use_pair_table:
            pair_energies = self.pair_table(
                flat_species[first], flat_species[second], torch.linalg.norm(vectors, dim=-1)
            )
            if self.priors.excluded_keys.shape[0] > 0:
                n_beads = positions.shape[1]
                keys = (first % n_beads) * n_beads + second % n_beads
                excluded = torch.isin(keys, self.priors.excluded_keys)
                pair_energies = torch.where(
                    excluded, torch.zeros_like(pair_energies), pair_energies
                )
            # Each pair is listed in both directions: half its energy goes to each bead.
            prior = prior.index_add(0, first, 0.5 * pair_energies)
        return flat_species, first, second, vectors, prior

    def member_bead_energies(
        self,
        positions: Tensor,
        boxes: Tensor,
        species: Tensor,
        pairs: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Bead energies of every member, [K, B, N] in kJ/mol (priors included).

        Args:
            positions: [B, N, 3] nm. boxes: [B, 3, 3] nm (rows are box vectors).
            species: [N] integer bead types.
            pairs: the directed pairs within the cutoff as :func:`neighbor_pairs` returns
                them (sorted by first, then second); searched when None.
        """
        n_frames, n_beads = positions.shape[0], positions.shape[1]
        flat_species, first, second, vectors, prior = self._pairs_and_priors(
            positions, boxes, species, pairs
        )
        energies = [net(flat_species, first, second, vectors) + prior for net in self.networks]
        if not energies:  # a classical model: the pair table and the priors alone
            energies = [prior]
        return torch.stack(energies).view(len(energies), n_frames, n_beads)

    def forward(
        self,
        positions: Tensor,
        boxes: Tensor,
        species: Tensor,
        pairs: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Ensemble-mean bead energies [B, N] in kJ/mol (``pairs`` as in
        :meth:`member_bead_energies`)."""
        return self.member_bead_energies(positions, boxes, species, pairs).mean(0)

    def energies_and_hierarchicality(
        self,
        positions: Tensor,
        boxes: Tensor,
        species: Tensor,
        total: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Ensemble-mean bead energies [B, N] (kJ/mol) and the members' mean hierarchicality.

        The hierarchicality of a member is sum_n S_n / (S_n + S_(n-1)) over its energy layers
        n >= 1, with S_n the sum over the batch of its squared layer-n bead energies (as in
        hippynn); penalising it keeps the later, interacting layers small corrections.
        ``total`` adds up the S_n of a batch shared among data-parallel ranks
        (:func:`cgkd.distributed.global_sum`).
        """
        n_frames, n_beads = positions.shape[0], positions.shape[1]
        flat_species, first, second, vectors, prior = self._pairs_and_priors(
            positions, boxes, species, None
        )
        energies, ratios = [], []
        for net in self.networks:
            layers = net.hierarchical_energies(flat_species, first, second, vectors)
            energies.append(layers.sum(0) + prior)
            squares = torch.sum(layers * layers, dim=1)
            if total is not None:
                squares = total(squares)
            ratios.append(torch.sum(squares[1:] / (squares[1:] + squares[:-1] + 1e-12)))
        mean_energy = torch.stack(energies).mean(0).view(n_frames, n_beads)
        return mean_energy, torch.stack(ratios).mean()


def _no_priors() -> Priors:
    """A placeholder for TorchScript (never called): no beads, no terms."""
    return Priors(
        0,
        None,
        HarmonicBonds(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0)),
        HarmonicAngles(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0)),
        torch.zeros(0, 2, dtype=torch.long),
    )


def _no_table() -> PairTable:
    """A placeholder for TorchScript (never called; not in the state dict, so that models
    saved without a table load)."""
    return PairTable(1, 0.1, 0.2, torch.zeros(1, 3), persistent=False)
