"""A CG potential: one or more HIP-NN-TS networks (an ensemble's mean) plus priors.

The energy of an ensemble is the mean of its members' energies, so its forces are the
mean of their forces. All members share one neighbour list and one prior.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cgkd.models.hipnn import HipnnTS
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.priors import PairRepulsion


class CGPotential(nn.Module):
    """Per-bead energies (kJ/mol) for batches of frames of one CG system.

    Args:
        networks: ensemble members (one for a single model); all must share the cutoff.
        prior: pair repulsion added to every member, or None.
    """

    def __init__(self, networks: list[HipnnTS], prior: PairRepulsion | None = None):
        super().__init__()
        if not networks:
            raise ValueError("a CGPotential needs at least one network")
        cutoffs = {net.cutoff for net in networks}
        if len(cutoffs) != 1:
            raise ValueError(
                f"ensemble members have different cutoffs {sorted(cutoffs)} nm; use one"
            )
        self.cutoff = cutoffs.pop()
        if prior is not None and prior.reach > self.cutoff:
            raise ValueError(
                f"the repulsion prior reaches {prior.reach:.3f} nm, beyond the model cutoff "
                f"{self.cutoff} nm; raise the cutoff or lower prior.switch_factor"
            )
        self.networks = nn.ModuleList(networks)
        self.use_prior = prior is not None
        self.prior = prior if prior is not None else PairRepulsion(torch.zeros(1, 1), 0.0)

    def member_bead_energies(self, positions: Tensor, boxes: Tensor, species: Tensor) -> Tensor:
        """Bead energies of every member, [K, B, N] in kJ/mol (prior included).

        Args:
            positions: [B, N, 3] nm. boxes: [B, 3, 3] nm (rows are box vectors).
            species: [N] integer bead types.
        """
        n_frames, n_beads = positions.shape[0], positions.shape[1]
        first, second, vectors = neighbor_pairs(positions, boxes, self.cutoff)
        flat_species = species.repeat(n_frames)
        prior = torch.zeros(n_frames * n_beads, dtype=positions.dtype, device=positions.device)
        if self.use_prior:
            distances = torch.linalg.norm(vectors, dim=-1)
            pair_energy = self.prior(flat_species[first], flat_species[second], distances)
            # Each pair is listed in both directions: half its energy goes to each bead.
            prior = prior.index_add(0, first, 0.5 * pair_energy)
        energies = [net(flat_species, first, second, vectors) + prior for net in self.networks]
        return torch.stack(energies).view(len(energies), n_frames, n_beads)

    def forward(self, positions: Tensor, boxes: Tensor, species: Tensor) -> Tensor:
        """Ensemble-mean bead energies [B, N] in kJ/mol."""
        return self.member_bead_energies(positions, boxes, species).mean(0)
