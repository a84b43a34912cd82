"""Holonomic constraints found in the data, for AA files that carry no constraint record.

Atoms joined by a constraint (a rigid bond, rigid water) keep their distance exactly, up to
the storage precision; flexible bonds vibrate by thousandths of a nm. Pairs of atoms of the
same molecule whose minimum-image distance varies by less than ``tolerance`` over frames
spread across the trajectory are taken as constrained.
"""

from __future__ import annotations

import warnings

import numpy as np

from cgkd.io.h5md import H5MDReader


def detect_constraints(
    reader: H5MDReader,
    molecules: np.ndarray,
    *,
    n_frames: int = 20,
    tolerance: float = 1e-4,
    max_molecule_atoms: int = 100,
) -> np.ndarray:
    """``[K, 2]`` atom pairs (i < j, same molecule) whose distance has a standard deviation
    below ``tolerance`` nm over ``n_frames`` frames of ``reader`` spread evenly.

    Molecules with more than ``max_molecule_atoms`` atoms are skipped with a warning (their
    pair count grows quadratically); such data should come with a constraint record.
    """
    if reader.n_frames < 2:
        warnings.warn(
            f"{reader.path} has one frame and no constraint record: constraints cannot be "
            "detected, so none are assumed",
            UserWarning,
            stacklevel=2,
        )
        return np.zeros((0, 2), dtype=np.int64)
    picked = np.unique(np.linspace(0, reader.n_frames - 1, n_frames).round().astype(int))
    frames = [reader.read(int(t), int(t) + 1) for t in picked]
    positions = np.concatenate([f.positions for f in frames])
    boxes = np.concatenate([f.boxes for f in frames])
    sizes = np.bincount(molecules)
    too_big = np.flatnonzero(sizes > max_molecule_atoms)
    if len(too_big):
        warnings.warn(
            f"{len(too_big)} molecules of {reader.path} have more than {max_molecule_atoms} "
            "atoms; their constraints are not detected (record them in the data)",
            UserWarning,
            stacklevel=2,
        )
    pairs = []
    order = np.argsort(molecules, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)]
    for size in np.unique(sizes[(sizes > 1) & (sizes <= max_molecule_atoms)]):
        members = np.stack(
            [order[starts[m] : starts[m + 1]] for m in np.flatnonzero(sizes == size)]
        )  # [molecules of this size, size]
        first, second = np.triu_indices(size, k=1)
        i, j = members[:, first].ravel(), members[:, second].ravel()
        delta = positions[:, j] - positions[:, i]
        fractional = delta @ np.linalg.inv(boxes)
        delta = (fractional - np.round(fractional)) @ boxes
        spread = np.linalg.norm(delta, axis=-1).std(axis=0)
        rigid = spread < tolerance
        pairs.append(np.stack([np.minimum(i, j)[rigid], np.maximum(i, j)[rigid]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    found = np.concatenate(pairs).astype(np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]
