"""Periodic pair distances, nearest neighbours and distance histograms (numpy, nm).

Orthorhombic boxes go through scipy's periodic k-d tree on positions wrapped into the box;
triclinic boxes through the cell list of :func:`cgkd.geometry.cells.pair_search`. Both find
the same pairs; cutoffs must not exceed half the smallest perpendicular box width, so that
each pair has one image within the cutoff. Nearest-neighbour queries need an orthorhombic box.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.spatial import cKDTree

from cgkd.geometry.cells import pair_search
from cgkd.geometry.periodic import (
    TriclinicBoxError,
    box_lengths,
    box_volume,
    box_widths,
    is_orthorhombic,
    minimum_image,
    wrap_orthorhombic,
)


def check_cutoff(cutoff: float, box: np.ndarray) -> None:
    """ValueError if ``cutoff`` (nm) exceeds half the smallest width of ``box`` [3, 3]."""
    half_width = 0.5 * box_widths(box).min()
    if cutoff > half_width:
        raise ValueError(
            f"cutoff {cutoff} nm exceeds half the shortest box width ({half_width:.4g} nm); "
            f"use at most {half_width:.4g} nm"
        )


def pair_vectors(
    positions: np.ndarray, box: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of positions [N, 3] closer than ``cutoff`` (nm) in ``box`` [3, 3].

    Returns ``(first, second, vectors)``: indices [P] with first < second and the
    minimum-image vectors x_second - x_first [P, 3] (nm). An orthorhombic box uses the k-d
    tree (vectors from the positions wrapped into the box), any other the cell list.
    """
    check_cutoff(cutoff, box)
    if is_orthorhombic(box):
        lengths = box_lengths(box)
        wrapped = wrap_orthorhombic(positions, lengths)
        pairs = cKDTree(wrapped, boxsize=lengths).query_pairs(cutoff, output_type="ndarray")
        first, second = pairs[:, 0], pairs[:, 1]
        vectors = minimum_image(wrapped[second] - wrapped[first], box)
        return first, second, vectors
    return _cell_list_pairs(positions, box, cutoff)


def _cell_list_pairs(
    positions: np.ndarray, box: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pair_vectors` by the cell list, for any box."""
    x = torch.as_tensor(positions, dtype=torch.float64)[None]
    b = torch.as_tensor(box, dtype=torch.float64)[None]
    index, shifts, _ = pair_search(x, b, cutoff, both_directions=False)
    first, second = index[:, 1].numpy(), index[:, 2].numpy()
    vectors = (x[0, index[:, 2]] - x[0, index[:, 1]] - shifts @ b[0]).numpy()
    flip = first > second
    first, second = np.where(flip, second, first), np.where(flip, first, second)
    return first, second, np.where(flip[:, None], -vectors, vectors)


def cross_distances(
    positions: np.ndarray, others: np.ndarray, box: np.ndarray, cutoff: float
) -> np.ndarray:
    """Distances (nm) of every pair of one of ``positions`` [N, 3] and one of ``others``
    [M, 3] closer than ``cutoff`` (nm) in ``box`` [3, 3], in no particular order."""
    check_cutoff(cutoff, box)
    if is_orthorhombic(box):
        lengths = box_lengths(box)
        tree = cKDTree(wrap_orthorhombic(positions, lengths), boxsize=lengths)
        tree_others = cKDTree(wrap_orthorhombic(others, lengths), boxsize=lengths)
        within = tree.sparse_distance_matrix(tree_others, cutoff, output_type="ndarray")
        return within["v"]
    first, second, vectors = pair_vectors(np.concatenate([positions, others]), box, cutoff)
    across = (first < len(positions)) & (second >= len(positions))
    return np.linalg.norm(vectors[across], axis=1)


def nearest_neighbours(
    centres: np.ndarray, candidates: np.ndarray, box: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest of ``candidates`` [M, 3] to each of ``centres`` [N, 3] (nm) in an
    orthorhombic ``box`` [3, 3], nearest first (a centre that is also a candidate finds itself
    at distance 0).

    Returns ``(indices, distances, vectors)``: [N, k] indices into the candidates, their
    distances [N, k] (nm) and minimum-image vectors candidate - centre [N, k, 3] (nm).
    Raises :class:`~cgkd.geometry.periodic.TriclinicBoxError` for a triclinic box.
    """
    if not is_orthorhombic(box):
        raise TriclinicBoxError(
            "nearest-neighbour queries (closest distances, tetrahedral order) need an "
            "orthorhombic box; this box is triclinic"
        )
    lengths = box_lengths(box)
    wrapped = wrap_orthorhombic(candidates, lengths)
    around = wrap_orthorhombic(centres, lengths)
    distances, indices = cKDTree(wrapped, boxsize=lengths).query(around, k=k)
    indices = indices.reshape(len(centres), k)
    vectors = minimum_image(wrapped[indices] - around[:, None], box)
    return indices, distances.reshape(len(centres), k), vectors


def distance_histogram(
    distances: np.ndarray,
    edges: np.ndarray,
    groups: np.ndarray | None = None,
    n_groups: int = 1,
) -> np.ndarray:
    """Counts [n_groups, n_bins] of ``distances`` in the bins ``edges`` [n_bins + 1] (nm),
    separately for each group label ``groups`` [P] (0 .. n_groups - 1; all 0 if None).

    Bin k holds edges[k] <= d < edges[k+1], the last bin also d = edges[-1] (``np.histogram``'s
    convention); distances outside the edges are not counted.
    """
    n_bins = len(edges) - 1
    index = np.searchsorted(edges, distances, side="right") - 1
    index[distances == edges[-1]] = n_bins - 1
    inside = (index >= 0) & (index < n_bins)
    group = np.zeros(len(index), dtype=np.int64) if groups is None else np.asarray(groups)
    flat = group[inside] * n_bins + index[inside]
    counts = np.bincount(flat, minlength=n_groups * n_bins)
    return counts.reshape(n_groups, n_bins).astype(np.float64)


def radial_histogram(
    positions: np.ndarray, box: np.ndarray, first: np.ndarray, second: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, float]:
    """One frame's g(r) of beads ``second`` around beads ``first`` (index arrays into
    positions [N, 3], nm; equal arrays for one species) on the bins ``edges`` (nm, from 0 to
    at most half the smallest box width), and the density (nm^-3) of second-beads seen from
    a first-bead: (N - 1) / V for one species, N_second / V otherwise.

    g(r) is the pair count per bin over the ideal-gas count: pairs / V times the shell volume,
    with N(N - 1) / 2 pairs within one species and N_first N_second otherwise.
    """
    r_max = float(edges[-1])
    volume = box_volume(box)
    n_a, n_b = len(first), len(second)
    same = np.array_equal(first, second)
    if min(n_a, n_b) < (2 if same else 1):
        raise ValueError(
            f"g(r) needs at least {2 if same else 1} beads of each species, got {n_a} and {n_b}"
        )
    if same:
        _, _, vectors = pair_vectors(positions[first], box, r_max)
        distances = np.linalg.norm(vectors, axis=1)
        n_pairs = n_a * (n_a - 1) / 2
        density = (n_a - 1) / volume
    else:
        distances = cross_distances(positions[first], positions[second], box, r_max)
        n_pairs = n_a * n_b
        density = n_b / volume
    counts = distance_histogram(distances, edges)[0]
    shell_volumes = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    return counts / (n_pairs / volume * shell_volumes), density


def species_pairs(
    types: np.ndarray, type_names: list[str] | tuple[str, ...]
) -> list[tuple[str, str]]:
    """Every unordered pair of the species present in ``types`` [N] (indices into
    ``type_names``), (a, b) with a <= b by index."""
    present = [type_names[k] for k in np.unique(types)]
    return list(itertools.combinations_with_replacement(present, 2))
