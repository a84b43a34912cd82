"""Holonomic constraints and virtual sites found in the data, for AA files that carry no record.

Atoms joined by a constraint (a rigid bond, rigid water) keep their distance exactly, up to
the storage precision; flexible bonds vibrate by thousandths of a nm. Pairs of atoms of the
same molecule whose minimum-image distance varies by less than ``tolerance`` over frames
spread across the trajectory are taken as constrained.

A virtual site (the massless charge site M of 4-site water, a lone pair) is an atom of zero
mass whose force is zero in every frame (the engine spread its force onto the atoms that
place it, as GROMACS writes it). It sits at a fixed distance from those atoms, so it is left
out of constraint detection, and it belongs to no bead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from cgkd.geometry import minimum_image
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader


def spread_frames(reader: H5MDReader, n_frames: int = 20) -> Frames:
    """Up to ``n_frames`` frames of ``reader`` spread evenly over it (all, if it has fewer)."""
    picked = np.unique(np.linspace(0, reader.n_frames - 1, n_frames).round().astype(int))
    return Frames.concatenate([reader.read(int(t), int(t) + 1) for t in picked])


def virtual_sites(masses: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """Indices of the atoms of zero ``masses`` [N] (amu) whose ``forces`` [T, N, 3] are all 0."""
    force_free = ~np.any(np.asarray(forces) != 0, axis=(0, 2))
    return np.flatnonzero((np.asarray(masses) == 0) & force_free)


def detect_constraints(
    positions: np.ndarray,
    boxes: np.ndarray,
    molecules: np.ndarray,
    *,
    source: str | Path,
    exclude: np.ndarray | None = None,
    tolerance: float = 1e-4,
    max_molecule_atoms: int = 100,
) -> np.ndarray:
    """``[K, 2]`` atom pairs (i < j, same molecule) whose distance has a standard deviation
    below ``tolerance`` nm over the frames ``positions`` [T, N, 3] in ``boxes`` [T, 3, 3] (nm).

    Atoms in ``exclude`` (virtual sites) are in no pair. Molecules with more than
    ``max_molecule_atoms`` atoms are skipped with a warning (their pair count grows
    quadratically); such data should come with a constraint record. ``source`` names the data
    in warnings.
    """
    if len(positions) < 2:
        warnings.warn(
            f"{source} has one frame and no constraint record: constraints cannot be "
            "detected, so none are assumed",
            UserWarning,
            stacklevel=2,
        )
        return np.zeros((0, 2), dtype=np.int64)
    sizes = np.bincount(molecules)
    too_big = np.flatnonzero(sizes > max_molecule_atoms)
    if len(too_big):
        warnings.warn(
            f"{len(too_big)} molecules of {source} have more than {max_molecule_atoms} "
            "atoms; their constraints are not detected (record them in the data)",
            UserWarning,
            stacklevel=2,
        )
    ignored = np.zeros(len(molecules), dtype=bool)
    if exclude is not None:
        ignored[exclude] = True
    pairs = []
    order = np.argsort(molecules, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)]
    for size in np.unique(sizes[(sizes > 1) & (sizes <= max_molecule_atoms)]):
        members = np.stack(
            [order[starts[m] : starts[m + 1]] for m in np.flatnonzero(sizes == size)]
        )  # [molecules of this size, size]
        first, second = np.triu_indices(size, k=1)
        i, j = members[:, first].ravel(), members[:, second].ravel()
        delta = minimum_image(positions[:, j] - positions[:, i], boxes)
        spread = np.linalg.norm(delta, axis=-1).std(axis=0)
        rigid = (spread < tolerance) & ~ignored[i] & ~ignored[j]
        pairs.append(np.stack([np.minimum(i, j)[rigid], np.maximum(i, j)[rigid]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    found = np.concatenate(pairs).astype(np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]
