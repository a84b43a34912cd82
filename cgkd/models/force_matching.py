"""Multiscale coarse-graining (MS-CG): pair tables fitted to forces by linear least squares.

The classical CG model users would otherwise pick. Every non-excluded pair of beads within
the cutoff interacts through U_ab(r) = sum_k y_abk B_k(r), a natural cubic spline through
knot energies y (:mod:`cgkd.models.pair_table`). The force on bead i is then linear in y:
F_i = sum_j U'_ab(r_ij) (x_j - x_i) / r_ij, so the knot energies that best reproduce the target
forces (the mapped AA forces: MS-CG; or a teacher's) minus the priors' solve the normal
equations G y = b, accumulated frame by frame, with a small curvature penalty that carries
the spline smoothly through distances the data never reach. The last knot of every table is
0, so that U is continuous at the cutoff. Lengths nm, energies kJ/mol, forces kJ/mol/nm.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cgkd.geometry import pair_search
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.pair_table import PairTable, pair_index, spline_basis
from cgkd.models.priors import Priors

#: The forces a classical model can be matched to.
TARGETS = ("mapped", "teacher")


@dataclass(frozen=True)
class TableSettings:
    """The pair table of a force-matched model.

    ``cutoff`` (nm): range of the tables; ``spacing`` (nm): between knots; the first knot is
    at half the closest distance any pair reaches in the data. ``smoothing``: weight of the
    curvature penalty sum_k (y_k-1 - 2 y_k + y_k+1)^2 relative to the mean diagonal of G.
    ``targets``: the forces matched, ``mapped`` (the AA forces: MS-CG) or ``teacher`` (the
    teacher's labels). The schema of the ``classical`` config section.
    """

    cutoff: float = 0.6
    spacing: float = 0.01
    smoothing: float = 1e-3
    targets: str = "mapped"

    def __post_init__(self) -> None:
        if self.cutoff <= 0 or self.spacing <= 0 or self.smoothing < 0:
            raise ValueError(
                f"classical.cutoff ({self.cutoff}) and classical.spacing ({self.spacing}) must be "
                f"positive and classical.smoothing ({self.smoothing}) not negative"
            )
        if self.targets not in TARGETS:
            raise ValueError(
                f"classical.targets={self.targets!r} is unknown; use one of {list(TARGETS)}"
            )


def _frame_pairs(
    x: torch.Tensor, box: torch.Tensor, cutoff: float, excluded: set[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every non-excluded pair within ``cutoff`` once: bead indices i, j, distances [P] and unit
    vectors (x_j - x_i) / r [P, 3] of one frame."""
    n_beads = x.shape[0]
    index, shifts, _ = pair_search(x[None], box[None], cutoff, both_directions=False)
    first, second = index[:, 1], index[:, 2]
    vectors = x[second] - x[first] - shifts @ box
    first, second, vectors = first.numpy(), second.numpy(), vectors.numpy()
    if excluded:
        keys = np.minimum(first, second) * n_beads + np.maximum(first, second)
        keep = ~np.isin(keys, list(excluded))
        first, second, vectors = first[keep], second[keep], vectors[keep]
    distances = np.linalg.norm(vectors, axis=1)
    return first, second, distances, vectors / distances[:, None]


def fit_pair_table(
    positions: np.ndarray,
    boxes: np.ndarray,
    forces: np.ndarray,
    types: np.ndarray,
    n_species: int,
    exclusions: np.ndarray,
    priors: Priors | None,
    settings: TableSettings,
    progress: bool = True,
) -> tuple[PairTable, dict[str, Any]]:
    """The pair table whose forces, added to the priors', best match ``forces``.

    Args:
        positions: [T, N, 3] nm. boxes: [T, 3, 3] nm. forces: [T, N, 3] kJ/mol/nm targets.
        types: [N] bead species. exclusions: [E, 2] bead pairs with no pair interaction.
        priors: subtracted from the targets (None: no priors).

    Returns the table and facts about the fit (knots, range, residual force RMS).
    """
    n_frames, n_beads = positions.shape[0], positions.shape[1]
    types = np.asarray(types)
    priors = None if priors is None else copy.deepcopy(priors).double()
    excluded = {int(min(a, b)) * n_beads + int(max(a, b)) for a, b in np.asarray(exclusions)}
    boxes_t = torch.as_tensor(boxes, dtype=torch.float64)
    frames = [torch.as_tensor(positions[k], dtype=torch.float64) for k in range(n_frames)]
    closest = min(
        float(_frame_pairs(x, box, settings.cutoff, excluded)[2].min(initial=settings.cutoff))
        for x, box in zip(frames, boxes_t, strict=True)
    )
    r_min = 0.5 * closest
    n_knots = max(3, round((settings.cutoff - r_min) / settings.spacing) + 1)
    table_of = pair_index(n_species)
    n_tables = int(table_of.max()) + 1
    n_params = n_tables * n_knots
    gram = np.zeros((n_params, n_params))
    rhs = np.zeros(n_params)
    square_targets = 0.0
    for k in tqdm(range(n_frames), desc="force matching", disable=not progress, unit="frame"):
        target = np.asarray(forces[k], dtype=np.float64) - _prior_forces(
            priors, frames[k], boxes_t[k], types
        )
        first, second, distances, units = _frame_pairs(
            frames[k], boxes_t[k], settings.cutoff, excluded
        )
        _, slopes = spline_basis(distances, r_min, settings.cutoff, n_knots)
        columns = torch.as_tensor(table_of[types[first], types[second]][:, None] * n_knots)
        columns = columns + torch.arange(n_knots)
        for a in range(3):
            # F_i[a] gains U'(r) u[a], F_j[a] loses it: design rows of the beads, [N, n_params].
            contribution = torch.zeros(len(first), n_params, dtype=torch.float64)
            contribution.scatter_(1, columns, torch.as_tensor(slopes * units[:, a : a + 1]))
            design = torch.zeros(n_beads, n_params, dtype=torch.float64)
            design.index_add_(0, torch.as_tensor(first), contribution)
            design.index_add_(0, torch.as_tensor(second), -contribution)
            design = design.numpy()
            gram += design.T @ design
            rhs += design.T @ target[:, a]
        square_targets += float(np.sum(target**2))
    values = _solve(gram, rhs, n_tables, n_knots, settings.smoothing)
    residual = square_targets - 2.0 * values.ravel() @ rhs + values.ravel() @ gram @ values.ravel()
    table = PairTable(n_species, r_min, settings.cutoff, torch.as_tensor(values))
    facts = {
        "r_min": r_min,
        "n_knots": n_knots,
        "train_force_rms_residual": float(np.sqrt(max(residual, 0.0) / (n_frames * n_beads * 3))),
    }
    return table, facts


def _solve(
    gram: np.ndarray, rhs: np.ndarray, n_tables: int, n_knots: int, smoothing: float
) -> np.ndarray:
    """Knot energies [T, K] minimising |A y - b|^2 + lambda |D2 y|^2 with every last knot 0."""
    n_params = n_tables * n_knots
    curvature = np.zeros((n_knots - 2, n_knots))
    for row in range(n_knots - 2):
        curvature[row, row : row + 3] = (1.0, -2.0, 1.0)
    penalty = np.kron(np.eye(n_tables), curvature.T @ curvature)
    scale = np.trace(gram) / n_params
    free = np.ones(n_params, dtype=bool)
    free[n_knots - 1 :: n_knots] = False  # U(cutoff) = 0
    system = (gram + smoothing * scale * penalty)[np.ix_(free, free)]
    values = np.zeros(n_params)
    values[free] = np.linalg.solve(system, rhs[free])
    return values.reshape(n_tables, n_knots)


def _prior_forces(
    priors: Priors | None, x: torch.Tensor, box: torch.Tensor, types: np.ndarray
) -> np.ndarray:
    """Forces [N, 3] of the priors on one frame (zeros without priors)."""
    if priors is None:
        return np.zeros(tuple(x.shape))
    positions = x.clone().unsqueeze(0).requires_grad_(True)
    boxes = box.unsqueeze(0)
    first, second, vectors = neighbor_pairs(positions, boxes, max(priors.reach, 1e-3))
    species = torch.as_tensor(types, dtype=torch.long)
    energy = priors(positions, boxes, species, first, second, vectors).sum()
    (gradient,) = torch.autograd.grad(energy, positions)
    return -gradient[0].numpy()
