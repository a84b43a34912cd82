"""Observable base classes (MDAnalysis ``AnalysisBase`` shape) and their result container.

An observable is set up with its parameters, then ``run`` on one trajectory or on several
independent runs: ``_prepare`` checks the settings against the runs, ``_single_frame`` sees
every selected frame, one at a time, and ``_conclude`` turns what was gathered into an
:class:`ObservableResult`. Error bars come from contiguous blocks of one run, or from the
independent runs when there are several.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cgkd.geometry import TriclinicBoxError, box_lengths, box_widths
from cgkd.observables.blocks import block_average
from cgkd.observables.trajectory import Frame, Trajectory


class NotComputableError(ValueError):
    """The data cannot give this observable with its settings (too few frames or lags, no
    neighbours within a cutoff, a distance beyond half the box, ...); the message names the
    setting to change. :func:`cgkd.observables.suite.evaluate` records it as skipped."""


def uniform_bins(low: float, high: float, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges [n_bins + 1] and centres [n_bins] of ``n_bins`` equal bins over [low, high];
    ValueError unless ``n_bins`` >= 1."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(low, high, n_bins + 1)
    return edges, 0.5 * (edges[:-1] + edges[1:])


def check_within_half_box(name: str, value: float, box: np.ndarray) -> None:
    """NotComputableError if the distance ``value`` (nm) called ``name`` exceeds half the
    smallest perpendicular width of ``box`` [3, 3] (nm)."""
    half_width = 0.5 * box_widths(box).min()
    if value > half_width:
        raise NotComputableError(
            f"{name}={value} nm exceeds half the shortest box width ({half_width:.4g} nm); "
            f"use {name} <= {half_width:.4g}"
        )


def orthorhombic_lengths(observable: str, box: np.ndarray) -> np.ndarray:
    """Edge lengths [3] (nm) of an orthorhombic ``box`` [3, 3]; NotComputableError naming the
    ``observable`` for a triclinic one."""
    try:
        return box_lengths(box)
    except TriclinicBoxError:
        raise NotComputableError(
            f"{observable} needs an orthorhombic box; this trajectory's box is triclinic"
        ) from None


@dataclass(frozen=True, eq=False)
class ObservableResult:
    """Binned observable ``y`` +- ``yerr`` (standard error) at bin centres ``x``.

    A two-dimensional observable (a histogram over ``x`` and ``x2``) has ``y`` and ``yerr`` of
    shape [len(x), len(x2)]. ``attrs`` holds scalars that go with the curve (a density in
    nm^-3, a fitted diffusion coefficient, the number of frames ...).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    yerr: np.ndarray
    x_label: str
    y_label: str
    x2: np.ndarray | None = None
    x2_label: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("x", "y", "yerr"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        shape = self.x.shape
        if self.x2 is not None:
            object.__setattr__(self, "x2", np.asarray(self.x2, dtype=np.float64))
            shape = (len(self.x), len(self.x2))
        if self.x.ndim != 1 or self.y.shape != shape or self.yerr.shape != shape:
            raise ValueError(
                f"{self.name}: y and yerr must have shape {shape} (bins of x"
                f"{' and x2' if self.x2 is not None else ''}), got {self.y.shape}, "
                f"{self.yerr.shape}"
            )

    @property
    def is_2d(self) -> bool:
        """Whether ``y`` is a histogram over ``x`` and ``x2``."""
        return self.x2 is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists, strings and numbers, ready for ``json.dump``."""
        data: dict[str, Any] = {
            "name": self.name,
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "yerr": self.yerr.tolist(),
            "x_label": self.x_label,
            "y_label": self.y_label,
            "attrs": dict(self.attrs),
        }
        if self.x2 is not None:
            data.update(x2=self.x2.tolist(), x2_label=self.x2_label)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservableResult:
        """Rebuild from ``to_dict()`` output or its JSON."""
        return cls(
            name=str(data["name"]),
            x=data["x"],
            y=data["y"],
            yerr=data["yerr"],
            x_label=str(data["x_label"]),
            y_label=str(data["y_label"]),
            x2=data.get("x2"),
            x2_label=str(data.get("x2_label", "")),
            attrs=dict(data.get("attrs", {})),
        )


class Observable(ABC):
    """An analysis of trajectories: ``run`` calls ``_prepare``, ``_single_frame``, ``_conclude``.

    Subclasses set ``name`` and implement the hooks; ``_begin_run`` marks the start of each
    independent run (observables that follow beads through time restart there).
    """

    name: str

    def run(
        self,
        trajectories: Trajectory | Sequence[Trajectory],
        *,
        start: int | None = None,
        stop: int | None = None,
        step: int | None = None,
        n_blocks: int = 5,
        progress: bool = False,
    ) -> ObservableResult:
        """Evaluate on frames ``[start:stop:step]`` of one trajectory or of independent runs.

        With one trajectory the error bars come from ``n_blocks`` contiguous blocks of frames;
        with several, from the spread between the runs.
        """
        runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
        if not runs:
            raise ValueError(f"{self.name}: no trajectory given")
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        selections = []
        for run in runs:
            frames = np.arange(run.n_frames)[start:stop:step]
            if len(frames) == 0:
                raise ValueError(
                    f"{run.name}: frame selection start={start}, stop={stop}, step={step} is "
                    f"empty for {run.n_frames} frames; widen it"
                )
            if run.n_beads != runs[0].n_beads or run.type_names != runs[0].type_names:
                raise ValueError(
                    f"{run.name}: {run.n_beads} beads of species {list(run.type_names)}, but "
                    f"{runs[0].name} has {runs[0].n_beads} of {list(runs[0].type_names)}; "
                    "independent runs must be of one system"
                )
            selections.append(frames)
        self._prepare(runs)
        for index, (run, frames) in enumerate(zip(runs, selections, strict=True)):
            self._begin_run(run, index, frames)
            label = self.name if len(runs) == 1 else f"{self.name} (run {index + 1})"
            for t in tqdm(frames, desc=label, disable=not progress):
                self._single_frame(run.frame(int(t)))
        return self._conclude(n_blocks)

    @abstractmethod
    def _prepare(self, runs: list[Trajectory]) -> None:
        """Check the settings against the runs and reset what is gathered."""

    @abstractmethod
    def _begin_run(self, run: Trajectory, index: int, frames: np.ndarray) -> None:
        """Start of independent run ``index`` with the selected ``frames``."""

    @abstractmethod
    def _single_frame(self, frame: Frame) -> None:
        """Gather what this observable needs from one frame."""

    @abstractmethod
    def _conclude(self, n_blocks: int) -> ObservableResult:
        """The result from everything gathered."""


class HistogramObservable(Observable):
    """A per-frame histogram averaged over frames: sum of frame values over sum of weights.

    Subclasses set ``x`` (bin centres), ``x_label``, ``y_label`` (and ``x2``, ``x2_label`` for a
    2-D histogram) and implement ``_histogram(frame) -> (values, weight)``.
    """

    x: np.ndarray
    x_label: str
    y_label: str
    x2: np.ndarray | None = None
    x2_label: str = ""

    def _prepare(self, runs: list[Trajectory]) -> None:
        self._values: list[np.ndarray] = []
        self._weights: list[float] = []
        self._runs: list[int] = []
        self._run = 0

    def _begin_run(self, run: Trajectory, index: int, frames: np.ndarray) -> None:
        self._run = index

    def _single_frame(self, frame: Frame) -> None:
        values, weight = self._histogram(frame)
        self._values.append(values)
        self._weights.append(weight)
        self._runs.append(self._run)

    def frame_values(self, trajectory: Trajectory) -> np.ndarray:
        """Each frame's own histogram, not averaged: [T, ...] (shape of ``y`` per frame)."""
        self._prepare([trajectory])
        return np.stack([self._histogram(trajectory.frame(t))[0] for t in range(len(trajectory))])

    @abstractmethod
    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        """Frame values (shape of ``y``) and sample weight; the estimate is sum / sum."""

    def _conclude(self, n_blocks: int) -> ObservableResult:
        values = np.stack(self._values)
        shape = values.shape[1:]
        self._n_blocks = n_blocks
        y, yerr = self._block_average(values.reshape(len(values), -1), self._weights)
        return self._result(y.reshape(shape), yerr.reshape(shape))

    def _block_average(
        self, values: np.ndarray, weights: np.ndarray | list[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and error of per-frame ``values`` [F, ...] over ``weights`` [F], blocked the
        way the histogram is (for scalars that subclasses gather alongside it)."""
        groups = np.asarray(self._runs) if self._runs[-1] > 0 else None
        values = np.asarray(values, dtype=np.float64)
        flat = values.reshape(len(values), -1)
        mean, error = block_average(flat, np.asarray(weights), self._n_blocks, groups)
        return mean.reshape(values.shape[1:]), error.reshape(values.shape[1:])

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        """The result container for the averaged histogram; override to add ``attrs``."""
        return ObservableResult(
            self.name,
            self.x,
            y,
            yerr,
            self.x_label,
            self.y_label,
            x2=self.x2,
            x2_label=self.x2_label,
            attrs={"n_frames": len(self._values), "n_runs": self._runs[-1] + 1},
        )
