"""The model's periodic neighbour list (TorchScript-compatible): directed pairs within the
cutoff, sorted by (first, second) (:func:`canonical_order`, which HipnnTS relies on), with
their minimum-image vectors recomputed from the positions (and boxes) with gradients.

The pairs come from the cell list of :func:`cgkd.geometry.cells.pair_search` (O(N) per frame,
orthorhombic and triclinic boxes), which runs without gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cgkd.geometry.cells import pair_search, perpendicular_widths


def check_cutoff(boxes: Tensor, cutoff: float) -> None:
    """Raise if ``cutoff`` (nm) is not below half the shortest box width."""
    smallest = float(perpendicular_widths(boxes.detach()).min())
    if cutoff >= 0.5 * smallest:
        # Rounded to 0.001 nm by hand: TorchScript has no format specifications.
        half, width = round(500.0 * smallest) / 1000.0, round(1000.0 * smallest) / 1000.0
        raise ValueError(
            f"model cutoff {cutoff} nm is not below half the smallest box width ({half} nm, "
            f"half of {width} nm); use a larger system or a smaller cutoff"
        )


def canonical_order(first: Tensor, second: Tensor, n_total: int) -> Tensor:
    """Permutation [P] that sorts pairs by first, then second (flat indices below ``n_total``)."""
    n_pairs = first.shape[0]
    last = n_total * n_total - 1  # the largest key
    dtype = torch.int32 if last < 2**31 else torch.int64  # fewer radix sort passes
    # torch sorts integer tensors of at least 32768 elements by radix sort, ten times faster
    # than its comparison sort of shorter ones: pad with keys that sort last (stable sort).
    keys = torch.full((max(n_pairs, 32768),), last, dtype=dtype, device=first.device)
    keys[:n_pairs] = first * n_total + second
    return torch.argsort(keys, stable=True)[:n_pairs]


def neighbor_pairs(
    positions: Tensor, boxes: Tensor, cutoff: float, method: str = "cells"
) -> tuple[Tensor, Tensor, Tensor]:
    """Directed neighbour pairs within ``cutoff`` for a batch of frames.

    Args:
        positions: [B, N, 3] bead positions, nm.
        boxes: [B, 3, 3] box vectors as rows, nm (may differ between frames).
        cutoff: pair cutoff, nm; must be below half the smallest perpendicular box width.
        method: ``"cells"`` (cell list, O(N)) or ``"all_pairs"`` (O(N^2), for comparison).

    Returns:
        ``(first, second, vectors)``: flat bead indices into B*N for both members of
        each pair (every pair appears in both directions, once each), sorted by first,
        then second (:func:`canonical_order`), and the minimum-image vectors
        x_second - x_first [P, 3] in nm, differentiable w.r.t. positions.
    """
    check_cutoff(boxes, cutoff)
    n_frames, n_beads = positions.shape[0], positions.shape[1]
    with torch.no_grad():
        index, shifts, _ = pair_search(positions, boxes, cutoff, method)
        frame = index[:, 0]
        first, second = index[:, 1] + frame * n_beads, index[:, 2] + frame * n_beads
        order = canonical_order(first, second, n_frames * n_beads)
        first, second = first.index_select(0, order), second.index_select(0, order)
        frame, shifts = frame.index_select(0, order), shifts.index_select(0, order)
    flat = positions.reshape(-1, 3)
    vectors = flat.index_select(0, second) - flat.index_select(0, first)
    # Sorted by first, the pairs are grouped by frame: shifts @ box per frame (as
    # box^T shifts^T: the tall, skinny product is several times faster that way round).
    counts = torch.bincount(frame, minlength=n_frames)
    translations: list[Tensor] = []
    start = 0
    for b in range(n_frames):
        end = start + int(counts[b])
        translations.append((boxes[b].t() @ shifts[start:end].t()).t())
        start = end
    return first, second, vectors - torch.cat(translations)
