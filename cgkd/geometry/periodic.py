"""Periodic boxes: shape, widths and volume, minimum images, wrapping and whole molecules.

Boxes are OpenMM's: box vectors a, b, c as the rows of a [3, 3] matrix in nm, in reduced form
(a along x, b in the xy plane), orthorhombic or triclinic. Functions that take ``boxes``
accept one box [3, 3] or one per frame [T, 3, 3] where the shapes broadcast.

An orthorhombic box (off-diagonal entries within :data:`TRICLINIC_TOLERANCE` of the longest
edge) takes a fast path through its edge lengths; any box takes the general path through
fractional coordinates s = x inv(box). Both give the same minimum images (up to ties at
exactly half a box).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cgkd.geometry.cells import perpendicular_widths

#: Off-diagonal box entries larger than this fraction of the longest edge mean a triclinic box.
TRICLINIC_TOLERANCE: float = 1e-6


class TriclinicBoxError(ValueError):
    """A computation that needs an orthorhombic box got a triclinic one."""


def is_orthorhombic(boxes: np.ndarray) -> bool:
    """Whether every box [..., 3, 3] (nm) is orthorhombic (off-diagonals within tolerance)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    lengths = np.diagonal(boxes, axis1=-2, axis2=-1)
    off_diagonal = boxes * (1.0 - np.eye(3))
    scale = np.max(np.abs(lengths), axis=-1, keepdims=True)
    return not np.any(np.abs(off_diagonal) > TRICLINIC_TOLERANCE * scale[..., None])


def box_lengths(boxes: np.ndarray) -> np.ndarray:
    """Edge lengths [..., 3] in nm of orthorhombic boxes [..., 3, 3].

    Raises :class:`TriclinicBoxError` for a triclinic box and ValueError for non-positive edges.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if not is_orthorhombic(boxes):
        raise TriclinicBoxError(
            "triclinic box is not supported here; pass orthorhombic boxes "
            "(rows a=(Lx,0,0), b=(0,Ly,0), c=(0,0,Lz))"
        )
    lengths = np.diagonal(boxes, axis1=-2, axis2=-1)
    if np.any(lengths <= 0):
        raise ValueError(f"box edge lengths must be positive, got min {lengths.min()} nm")
    return lengths


def box_widths(box: np.ndarray) -> np.ndarray:
    """Perpendicular widths [3] (nm) of a box [3, 3]: the edge lengths of an orthorhombic box,
    volume over face area otherwise. A sphere of radius below half the smallest width meets
    no periodic image of its centre."""
    box = np.asarray(box, dtype=np.float64)
    if is_orthorhombic(box):
        return box_lengths(box)
    return perpendicular_widths(torch.from_numpy(box[None])).numpy()[0]


def box_volume(box: np.ndarray) -> float:
    """Volume (nm^3) of a box [3, 3]: the product of the edges of an orthorhombic box,
    ``|det(box)|`` otherwise."""
    box = np.asarray(box, dtype=np.float64)
    if is_orthorhombic(box):
        return float(np.prod(box_lengths(box)))
    return float(abs(np.linalg.det(box)))


def minimum_image(vectors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Separation ``vectors`` [..., 3] (nm) moved to their shortest periodic image in
    ``boxes`` ([3, 3] or [..., 3, 3] matching the vectors' leading axes)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if is_orthorhombic(boxes):
        lengths = box_lengths(boxes)
        if boxes.ndim > 2:
            lengths = lengths[..., None, :]
        return vectors - lengths * np.round(vectors / lengths)
    return vectors - np.round(vectors @ np.linalg.inv(boxes)) @ boxes


def minimum_image_batch(vectors: Tensor, boxes: Tensor) -> Tensor:
    """Vectors [B, K, 3] (nm) moved to their minimum image in boxes [B, 3, 3], in torch (any
    box shape, differentiable in the vectors and boxes; TorchScript-compatible)."""
    shifts = torch.round(torch.bmm(vectors, torch.linalg.inv(boxes))).detach()
    return vectors - torch.bmm(shifts, boxes)


def wrap(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Points [T, n, 3] wrapped into the boxes [T, 3, 3] (fractional coordinates in [0, 1)), nm."""
    fractional = points @ np.linalg.inv(boxes)
    fractional -= np.floor(fractional)
    fractional[fractional >= 1.0] = 0.0
    return fractional @ boxes


def wrap_orthorhombic(positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions [N, 3] wrapped into [0, L) of an orthorhombic box of edges ``lengths`` (nm)."""
    wrapped = positions - np.floor(positions / lengths) * lengths
    # floor can leave a value exactly at L through rounding (e.g. -1e-17 -> L); map it to 0.
    return np.where(wrapped >= lengths, 0.0, wrapped)


def make_whole(positions: np.ndarray, boxes: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Positions [T, N, 3] (nm) with every atom moved to its minimum image relative to its
    molecule's reference atom ``reference`` [N] (an atom index per atom), in boxes [T, 3, 3]
    of any shape."""
    inverse = np.linalg.inv(boxes)
    offset = (positions - positions[:, reference]) @ inverse
    return positions - np.round(offset) @ boxes
