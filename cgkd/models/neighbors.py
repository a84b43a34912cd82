"""Periodic neighbour pairs inside the model (TorchScript-compatible).

All-pairs search under the minimum-image convention, batched over frames of one
system. Cost is O(N^2) per frame; fine for a few thousand beads.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _wrap(vectors: Tensor, boxes: Tensor, inverse: Tensor) -> Tensor:
    """Minimum image of vectors [B, M, 3] (nm) in boxes [B, 3, 3] with their inverses.

    Fractional rounding gives the true minimum image for orthorhombic boxes and for
    triclinic boxes whenever the cutoff is below half the shortest perpendicular box
    width (checked by :func:`check_cutoff`).
    """
    shifts = torch.round(torch.bmm(vectors, inverse)).detach()
    return vectors - torch.bmm(shifts, boxes)


def perpendicular_widths(boxes: Tensor) -> Tensor:
    """Perpendicular widths [B, 3] (nm) of boxes [B, 3, 3]: volume over face area."""
    a, b, c = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    volume = torch.abs(torch.sum(a * torch.linalg.cross(b, c), dim=-1))
    areas = torch.stack(
        [
            torch.linalg.norm(torch.linalg.cross(b, c), dim=-1),
            torch.linalg.norm(torch.linalg.cross(c, a), dim=-1),
            torch.linalg.norm(torch.linalg.cross(a, b), dim=-1),
        ],
        dim=-1,
    )
    return volume.unsqueeze(-1) / areas


def check_cutoff(boxes: Tensor, cutoff: float) -> None:
    """Raise if ``cutoff`` (nm) is not below half the shortest box width."""
    smallest = float(perpendicular_widths(boxes.detach()).min())
    if cutoff >= 0.5 * smallest:
        raise ValueError(
            f"model cutoff {cutoff} nm is not below half the smallest box width {smallest} nm; "
            "use a larger system or a smaller cutoff"
        )


def neighbor_pairs(
    positions: Tensor, boxes: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Directed neighbour pairs within ``cutoff`` for a batch of frames.

    Args:
        positions: [B, N, 3] bead positions, nm.
        boxes: [B, 3, 3] box vectors as rows, nm.
        cutoff: pair cutoff, nm.

    Returns:
        ``(first, second, vectors)``: flat bead indices into B*N for both members of
        each pair (every pair appears in both directions) and the minimum-image
        vectors x_second - x_first [P, 3] in nm, differentiable w.r.t. positions.
    """
    check_cutoff(boxes, cutoff)
    n_frames, n_beads = positions.shape[0], positions.shape[1]
    inverse = torch.linalg.inv(boxes)
    with torch.no_grad():
        all_vectors = (positions.unsqueeze(1) - positions.unsqueeze(2)).reshape(n_frames, -1, 3)
        all_vectors = _wrap(all_vectors, boxes, inverse).reshape(n_frames, n_beads, n_beads, 3)
        distance2 = torch.sum(all_vectors * all_vectors, dim=-1)
        eye = torch.eye(n_beads, dtype=torch.bool, device=positions.device)
        mask = (distance2 < cutoff * cutoff) & ~eye.unsqueeze(0)
        index = torch.nonzero(mask)
        frame, first, second = index[:, 0], index[:, 1], index[:, 2]
    vectors = positions[frame, second] - positions[frame, first]
    vectors = _wrap(vectors.unsqueeze(1), boxes[frame], inverse[frame]).squeeze(1)
    offset = frame * n_beads
    return first + offset, second + offset, vectors
