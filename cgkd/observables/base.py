"""Observable base class (MDAnalysis AnalysisBase style) and its result container."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cgkd.observables.blocks import block_average
from cgkd.observables.box import box_lengths


@dataclass(frozen=True, eq=False)
class ObservableResult:
    """Binned observable: ``y`` +- ``yerr`` (block-average standard error) at bin centres ``x``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    yerr: np.ndarray
    x_label: str
    y_label: str

    def __post_init__(self) -> None:
        for field in ("x", "y", "yerr"):
            object.__setattr__(self, field, np.asarray(getattr(self, field), dtype=np.float64))
        if self.x.ndim != 1 or self.y.shape != self.x.shape or self.yerr.shape != self.x.shape:
            raise ValueError(
                f"x, y, yerr must be 1-D of equal length, got shapes "
                f"{self.x.shape}, {self.y.shape}, {self.yerr.shape}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str and float lists), ready for ``json.dump`` or ``np.savez(**d)``."""
        return {
            "name": self.name,
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "yerr": self.yerr.tolist(),
            "x_label": self.x_label,
            "y_label": self.y_label,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ObservableResult:
        """Rebuild from ``to_dict()`` output, a loaded JSON dict or an ``np.load``-ed npz file."""
        return cls(
            name=str(data["name"]),
            x=data["x"],
            y=data["y"],
            yerr=data["yerr"],
            x_label=str(data["x_label"]),
            y_label=str(data["y_label"]),
        )


class Observable(ABC):
    """Histogram observable of a trajectory: positions [T, N, 3] and boxes [T, 3, 3] in nm.

    Subclasses set ``name``, ``x`` (bin centres), ``x_label`` and ``y_label`` and implement
    ``_prepare`` and ``_single_frame``; ``run`` drives them and ``_conclude`` block-averages.
    """

    name: str
    x: np.ndarray
    x_label: str
    y_label: str

    def run(
        self,
        positions: np.ndarray,
        boxes: np.ndarray,
        *,
        start: int | None = None,
        stop: int | None = None,
        step: int | None = None,
        n_blocks: int = 5,
        progress: bool = False,
    ) -> ObservableResult:
        """Evaluate on frames ``[start:stop:step]``; errors from ``n_blocks`` contiguous blocks."""
        positions, boxes = _check_trajectory(positions, boxes)
        frames = np.arange(len(positions))[start:stop:step]
        if len(frames) == 0:
            raise ValueError(
                f"frame selection start={start}, stop={stop}, step={step} is empty for "
                f"{len(positions)} frames; widen it"
            )
        self._prepare(positions[frames], boxes[frames])
        values, weights = [], []
        for t in tqdm(frames, desc=self.name, disable=not progress):
            frame_values, frame_weight = self._single_frame(positions[t], boxes[t])
            values.append(frame_values)
            weights.append(frame_weight)
        return self._conclude(np.stack(values), np.asarray(weights), n_blocks)

    @abstractmethod
    def _prepare(self, positions: np.ndarray, boxes: np.ndarray) -> None:
        """Check the selected frames (positions [F, N, 3], orthorhombic boxes [F, 3, 3])."""

    @abstractmethod
    def _single_frame(self, positions: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """Frame values [n_bins] and sample weight; the estimate is sum(values) / sum(weights)."""

    def _conclude(self, values: np.ndarray, weights: np.ndarray, n_blocks: int) -> ObservableResult:
        """Block-average the per-frame values into the result."""
        y, yerr = block_average(values, weights, n_blocks)
        return ObservableResult(self.name, self.x, y, yerr, self.x_label, self.y_label)


def _check_trajectory(positions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 positions [T, N, 3] and orthorhombic boxes [T, 3, 3] (nm)."""
    positions = np.asarray(positions, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must have shape [T, N, 3], got {positions.shape}")
    if boxes.shape != (len(positions), 3, 3):
        raise ValueError(
            f"boxes must have shape [T, 3, 3] = {(len(positions), 3, 3)}, got {boxes.shape}"
        )
    if not (np.isfinite(positions).all() and np.isfinite(boxes).all()):
        raise ValueError("positions and boxes must be finite; drop or fix frames with NaN/inf")
    box_lengths(boxes)
    return positions, boxes
