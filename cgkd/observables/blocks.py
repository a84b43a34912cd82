"""Block averaging of per-frame histograms for means with error bars."""

from __future__ import annotations

import numpy as np


def block_average(
    values: np.ndarray,
    weights: np.ndarray,
    n_blocks: int = 5,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean over frames and its standard error from block means.

    ``values`` [F, B] are per-frame sums and ``weights`` [F] per-frame sample counts, so the
    estimate is sum(values) / sum(weights). The blocks are the independent runs labelled by
    ``groups`` [F] when given, else ``min(n_blocks, F)`` contiguous blocks of frames; the error
    is std(block means, ddof=1) / sqrt(number of blocks), zero for one block. Blocks without
    samples are left out of the error.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if values.ndim != 2 or weights.shape != values.shape[:1]:
        raise ValueError(
            f"values must be [F, B] and weights [F], got {values.shape} and {weights.shape}"
        )
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    if weights.sum() <= 0:
        raise ValueError("no samples in any frame; check the selection and cutoffs")
    mean = values.sum(axis=0) / weights.sum()
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != weights.shape:
            raise ValueError(f"groups must be [F] = {weights.shape}, got {groups.shape}")
        blocks = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    else:
        blocks = np.array_split(np.arange(len(weights)), min(n_blocks, len(weights)))
    block_means = np.array(
        [values[b].sum(axis=0) / weights[b].sum() for b in blocks if weights[b].sum() > 0]
    )
    if len(block_means) < 2:
        return mean, np.zeros_like(mean)
    error = block_means.std(axis=0, ddof=1) / np.sqrt(len(block_means))
    return mean, error
