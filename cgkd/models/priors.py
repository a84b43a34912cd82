"""Physical priors added to the network energy so CG beads cannot collapse."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from cgkd.observables.rdf import RDF, rdf_onset


class PairRepulsion(nn.Module):
    """Per-species-pair repulsion U(r) = epsilon (sigma_ab / r)^12 S(r), in kJ/mol.

    ``sigma_ab`` (nm) is the onset of the reference RDF of the pair, so the prior is
    about k_B T at the closest distance ever sampled and grows steeply below it.
    S(r) switches smoothly (cos^2) from 1 at sigma to 0 at ``switch_factor * sigma``,
    so the prior vanishes where the reference data live.
    """

    def __init__(self, sigma: Tensor, epsilon: float, switch_factor: float = 1.5):
        super().__init__()
        if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(
                f"sigma must be a square [n_species, n_species] matrix, got {list(sigma.shape)}"
            )
        if switch_factor <= 1.0:
            raise ValueError(f"switch_factor {switch_factor} must exceed 1")
        self.register_buffer("sigma", sigma.to(torch.float32))
        self.epsilon = float(epsilon)
        self.switch_factor = float(switch_factor)

    @property
    def reach(self) -> float:
        """Largest distance (nm) at which the prior acts."""
        return float(self.sigma.max()) * self.switch_factor

    def forward(self, species_first: Tensor, species_second: Tensor, distances: Tensor) -> Tensor:
        """Energies [P] (kJ/mol) of pairs with the given species and distances (nm)."""
        sigma = self.sigma[species_first, species_second].to(distances.dtype)
        r_off = sigma * self.switch_factor
        x = torch.clamp((distances - sigma) / (r_off - sigma), 0.0, 1.0)
        switch = torch.where(x < 1.0, torch.cos(0.5 * math.pi * x) ** 2, torch.zeros_like(x))
        return self.epsilon * (sigma / distances) ** 12 * switch


def fit_repulsion_sigma(
    positions: np.ndarray,
    boxes: np.ndarray,
    types: np.ndarray,
    n_species: int,
    r_max: float,
    threshold: float = 0.01,
    n_bins: int = 200,
) -> np.ndarray:
    """Onset (nm) of the reference RDF of every species pair: the first r where g(r) > threshold.

    Args:
        positions: [T, N, 3] reference bead positions, nm. boxes: [T, 3, 3] nm. types: [N].
    """
    sigma = np.zeros((n_species, n_species))
    for a in range(n_species):
        for b in range(a, n_species):
            result = RDF(r_max, n_bins, types=types, pair=(a, b)).run(positions, boxes)
            sigma[a, b] = sigma[b, a] = rdf_onset(result, threshold)
    return sigma
