"""Periodic orthorhombic boxes: edge lengths, wrapping and minimum-image vectors (nm)."""

from __future__ import annotations

import numpy as np

from cgkd.observables.base import NotComputableError

#: Off-diagonal box entries larger than this fraction of the longest edge mean a triclinic box.
TRICLINIC_TOLERANCE: float = 1e-6


def box_lengths(boxes: np.ndarray) -> np.ndarray:
    """Edge lengths [..., 3] in nm of orthorhombic boxes [..., 3, 3] (rows are box vectors).

    Raises ValueError for triclinic or non-positive boxes, which these observables do not support.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    lengths = np.diagonal(boxes, axis1=-2, axis2=-1)
    off_diagonal = boxes * (1.0 - np.eye(3))
    scale = np.max(np.abs(lengths), axis=-1, keepdims=True)
    tilted = np.any(np.abs(off_diagonal) > TRICLINIC_TOLERANCE * scale[..., None], axis=(-2, -1))
    if np.any(tilted):
        where = f" in frame {int(np.argmax(np.ravel(tilted)))}" if boxes.ndim > 2 else ""
        raise ValueError(
            f"triclinic box{where} is not supported; pass orthorhombic boxes "
            "(rows a=(Lx,0,0), b=(0,Ly,0), c=(0,0,Lz))"
        )
    if np.any(lengths <= 0):
        raise ValueError(f"box edge lengths must be positive, got min {lengths.min()} nm")
    return lengths


def wrap(positions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions [N, 3] wrapped into [0, L) of an orthorhombic box with edges ``lengths`` (nm)."""
    wrapped = positions - np.floor(positions / lengths) * lengths
    # floor can leave a value exactly at L through rounding (e.g. -1e-17 -> L); map it to 0.
    return np.where(wrapped >= lengths, 0.0, wrapped)


def minimum_image(vectors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Separation ``vectors`` [..., 3] reduced to their shortest periodic image (nm)."""
    return vectors - lengths * np.round(vectors / lengths)


def check_within_half_box(name: str, value: float, box: np.ndarray) -> None:
    """NotComputableError if the distance ``value`` (nm) called ``name`` exceeds half the
    shortest box width."""
    half_width = 0.5 * box_lengths(box).min()
    if value > half_width:
        raise NotComputableError(
            f"{name}={value} nm exceeds half the shortest box width ({half_width:.4g} nm); "
            f"use {name} <= {half_width:.4g}"
        )
