"""Tabulated pair potentials: one natural cubic spline U_ab(r) per species pair.

The spline passes through energies at ``n_knots`` uniformly spaced distances on
[r_min, cutoff] and is zero outside that range: exactly the function OpenMM's
``Continuous1DFunction`` / ``Continuous2DFunction`` interpolate from the same values, so a
table runs in OpenMM as a native ``CustomNonbondedForce`` with no torch at run time
(:mod:`cgkd.simulation.native`). The energy is linear in the knot values,
U(r) = sum_k y_k B_k(r) with B_k the cardinal natural splines (:func:`spline_basis`), which
makes force matching a linear least-squares problem (:mod:`cgkd.models.force_matching`).
Lengths nm, energies kJ/mol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def natural_spline_matrix(n_knots: int, spacing: float) -> np.ndarray:
    """[K, K] matrix S with m = S y: the second derivatives m at the knots of the natural
    cubic spline through values y at ``n_knots`` knots ``spacing`` (nm) apart (m_0 = m_K-1 = 0).
    """
    if n_knots < 3:
        raise ValueError(f"a pair table needs at least 3 knots, got {n_knots}")
    inner = n_knots - 2
    tridiagonal = 4.0 * np.eye(inner) + np.eye(inner, k=1) + np.eye(inner, k=-1)
    second_difference = np.zeros((inner, n_knots))
    for row in range(inner):
        second_difference[row, row : row + 3] = (1.0, -2.0, 1.0)
    matrix = np.zeros((n_knots, n_knots))
    matrix[1:-1] = np.linalg.solve(tridiagonal, second_difference) * 6.0 / spacing**2
    return matrix


def spline_basis(
    distances: np.ndarray, r_min: float, cutoff: float, n_knots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cardinal natural-spline basis at ``distances`` [P] (nm): values B [P, K] and
    derivatives dB/dr [P, K] (1/nm); zero outside [r_min, cutoff]."""
    spacing = (cutoff - r_min) / (n_knots - 1)
    second = natural_spline_matrix(n_knots, spacing)
    r = np.asarray(distances, dtype=np.float64)
    inside = (r >= r_min) & (r <= cutoff)
    segment = np.clip(np.floor((r - r_min) / spacing).astype(np.int64), 0, n_knots - 2)
    t = (r - r_min) / spacing - segment
    a = 1.0 - t
    rows = np.arange(len(r))
    values = np.zeros((len(r), n_knots))
    slopes = np.zeros((len(r), n_knots))
    values[rows, segment] += a
    values[rows, segment + 1] += t
    slopes[rows, segment] -= 1.0 / spacing
    slopes[rows, segment + 1] += 1.0 / spacing
    low, high = second[segment], second[segment + 1]
    values += spacing**2 / 6.0 * ((a**3 - a)[:, None] * low + (t**3 - t)[:, None] * high)
    slopes += (
        spacing / 6.0 * ((1.0 - 3.0 * a**2)[:, None] * low + (3.0 * t**2 - 1.0)[:, None] * high)
    )
    values[~inside] = 0.0
    slopes[~inside] = 0.0
    return values, slopes


def pair_index(n_species: int) -> np.ndarray:
    """[S, S] index of the table of the unordered species pair (a, b), a <= b in row order."""
    index = np.zeros((n_species, n_species), dtype=np.int64)
    count = 0
    for a in range(n_species):
        for b in range(a, n_species):
            index[a, b] = index[b, a] = count
            count += 1
    return index


class PairTable(nn.Module):
    """Pair energies U_ab(r) (kJ/mol) from one natural cubic spline per unordered species pair.

    Args:
        n_species: number of bead types S; there are S (S + 1) / 2 tables.
        r_min, cutoff: the tabulated range, nm (zero energy outside it).
        values: [S (S + 1) / 2, K] knot energies (kJ/mol) at K uniformly spaced distances from
            ``r_min`` to ``cutoff``; the last knot of every table must be 0, so that U is
            continuous at the cutoff.
        persistent: whether the values belong to the owner's state dict (a placeholder's do
            not).
    """

    def __init__(
        self, n_species: int, r_min: float, cutoff: float, values: Tensor, persistent: bool = True
    ):
        super().__init__()
        if not 0.0 < r_min < cutoff:
            raise ValueError(f"need 0 < r_min ({r_min}) < cutoff ({cutoff}) nm for a pair table")
        n_tables = n_species * (n_species + 1) // 2
        if values.dim() != 2 or values.shape[0] != n_tables:
            raise ValueError(
                f"pair table values have shape {list(values.shape)}, expected "
                f"[{n_tables}, n_knots] for {n_species} species"
            )
        if bool(torch.any(values[:, -1] != 0)):
            raise ValueError(
                "the last knot of every pair table must be 0 (U continuous at the cutoff)"
            )
        self.n_species = int(n_species)
        self.r_min = float(r_min)
        self.cutoff = float(cutoff)
        self.n_knots = int(values.shape[1])
        self.spacing = (self.cutoff - self.r_min) / (self.n_knots - 1)
        second = natural_spline_matrix(self.n_knots, self.spacing)
        values64 = values.to(torch.float64)
        self.register_buffer("values", values64.clone(), persistent)
        self.register_buffer("second", values64 @ torch.as_tensor(second).t(), persistent)
        self.register_buffer("table_of", torch.as_tensor(pair_index(n_species)), persistent)

    def spec(self) -> dict[str, Any]:
        """The JSON-friendly description :meth:`from_spec` rebuilds the table from."""
        return {
            "n_species": self.n_species,
            "r_min": self.r_min,
            "cutoff": self.cutoff,
            "values": self.values.tolist(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> PairTable:
        """The table described by :meth:`spec`."""
        values = torch.as_tensor(spec["values"], dtype=torch.float64)
        return cls(spec["n_species"], spec["r_min"], spec["cutoff"], values)

    def forward(self, species_first: Tensor, species_second: Tensor, distances: Tensor) -> Tensor:
        """Energies [P] (kJ/mol) of pairs of the given species at ``distances`` [P] (nm)."""
        position = (distances - self.r_min) / self.spacing
        segment = torch.clamp(torch.floor(position.detach()), 0.0, float(self.n_knots - 2))
        t = position - segment
        a = 1.0 - t
        flat = self.table_of[species_first, species_second] * self.n_knots
        flat = flat + segment.to(torch.long)
        y = self.values.to(distances.dtype).reshape(-1)
        m = self.second.to(distances.dtype).reshape(-1)
        curvature = self.spacing * self.spacing / 6.0
        energy = a * y.index_select(0, flat) + t * y.index_select(0, flat + 1)
        energy = energy + curvature * (
            (a * a * a - a) * m.index_select(0, flat)
            + (t * t * t - t) * m.index_select(0, flat + 1)
        )
        inside = (distances >= self.r_min) & (distances <= self.cutoff)
        return torch.where(inside, energy, torch.zeros_like(energy))
