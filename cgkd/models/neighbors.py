"""Periodic neighbour pairs inside the model (TorchScript-compatible).

All-pairs search under the minimum-image convention, batched over frames of one
system. Cost is O(N^2) per frame; fine for a few thousand beads.
"""

from __future__ import annotations

import torch
from torch import Tensor


def minimum_image(displacements: Tensor, boxes: Tensor) -> Tensor:
    """Wrap displacement vectors [B, ..., 3] (nm) into the box [B, 3, 3] (rows are box vectors).

    Uses fractional coordinates, which gives the true minimum image for orthorhombic
    boxes and for triclinic boxes whenever the cutoff is below half the shortest
    perpendicular box width (checked by :func:`check_cutoff`).
    """
    shape = displacements.shape
    flat = displacements.reshape(shape[0], -1, 3)
    inverse = torch.linalg.inv(boxes)
    fractional = torch.bmm(flat, inverse)
    shifts = torch.round(fractional).detach()
    wrapped = flat - torch.bmm(shifts, boxes)
    return wrapped.reshape(shape)


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
    n_beads = positions.shape[1]
    with torch.no_grad():
        all_vectors = positions.unsqueeze(1) - positions.unsqueeze(2)
        all_vectors = minimum_image(all_vectors, boxes)
        distance2 = torch.sum(all_vectors * all_vectors, dim=-1)
        eye = torch.eye(n_beads, dtype=torch.bool, device=positions.device)
        mask = (distance2 < cutoff * cutoff) & ~eye.unsqueeze(0)
        index = torch.nonzero(mask)
        frame, first, second = index[:, 0], index[:, 1], index[:, 2]
    vectors = positions[frame, second] - positions[frame, first]
    inverse = torch.linalg.inv(boxes)
    fractional = torch.bmm(vectors.unsqueeze(1), inverse[frame]).squeeze(1)
    shifts = torch.round(fractional).detach()
    vectors = vectors - torch.bmm(shifts.unsqueeze(1), boxes[frame]).squeeze(1)
    offset = frame * n_beads
    return first + offset, second + offset, vectors
