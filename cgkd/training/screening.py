"""Which reference frames get expensive (hard) labels: structural-feature screening.

Every candidate frame gets a descriptor vector (:func:`frame_descriptors`): for each species
pair, a pair-distance histogram normalised like g(r), and the closest distance. Selection
(:func:`select_frames`) is then one of

- ``fps``: farthest-point sampling in the standardised descriptor space (each feature
  scaled to unit variance over the candidates), starting from the frame farthest from their
  mean, so the picks spread over the structures the data hold;
- ``disagreement``: the frames where the teacher ensemble's members disagree most (mean
  force spread), i.e. where the teacher is least sure;
- ``random``: a seeded uniform choice, the comparison.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cgkd.geometry import nearest_neighbours, radial_histogram, species_pairs
from cgkd.io.frames import Frames

#: Selection methods.
METHODS = ("fps", "random", "disagreement")


@dataclass
class ScreeningSettings:
    """Which reference training frames get hard labels, the schema of the ``screening``
    config section: ``method`` (one of :data:`METHODS`), ``fraction`` of the training frames
    (at least one frame), and the descriptors' pair-distance histogram: ``r_max`` (nm, at
    most half the box's smallest width) and ``n_bins``."""

    method: str = "fps"
    fraction: float = 0.1
    r_max: float = 0.6
    n_bins: int = 12


@dataclass
class Descriptors:
    """Per-frame descriptors [T, F] and the name of each of the F features."""

    values: np.ndarray
    names: list[str]


def frame_descriptors(frames: Frames, *, r_max: float, n_bins: int) -> Descriptors:
    """Per frame and species pair: the pair's g(r) on ``n_bins`` bins up to ``r_max`` nm (as
    the RDF observable's per-frame histogram; ``r_max`` at most half the box) and its closest
    distance (nm). The closest distance needs orthorhombic boxes."""
    n_species = int(frames.types.max()) + 1
    type_names = frames.type_names or [str(k) for k in range(n_species)]
    edges = np.linspace(0.0, float(r_max), n_bins + 1)
    names: list[str] = []
    columns: list[np.ndarray] = []
    for a, b in species_pairs(frames.types, type_names):
        first = np.flatnonzero(frames.types == type_names.index(a))
        second = np.flatnonzero(frames.types == type_names.index(b))
        g, closest = [], []
        for positions, box in zip(frames.positions, frames.boxes, strict=True):
            g.append(radial_histogram(positions, box, first, second, edges)[0])
            closest.append(_closest(positions, box, first, second))
        columns += [np.stack(g), np.asarray(closest)[:, None]]
        names += [f"g {a}-{b} {lo:.3f}-{hi:.3f} nm" for lo, hi in itertools.pairwise(edges)]
        names.append(f"closest {a}-{b} nm")
    return Descriptors(np.concatenate(columns, axis=1), names)


def _closest(
    positions: np.ndarray, box: np.ndarray, first: np.ndarray, second: np.ndarray
) -> float:
    """The smallest periodic distance (nm) between a bead of ``first`` and another bead of
    ``second`` (index arrays)."""
    same = np.array_equal(first, second)
    _, distances, _ = nearest_neighbours(positions[first], positions[second], box, 2 if same else 1)
    return float((distances[:, 1] if same else distances[:, 0]).min())


def select_frames(
    method: str,
    n_frames: int,
    *,
    descriptors: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    n_candidates: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Positions (into the candidates) of ``n_frames`` selected frames, in selection order.

    ``fps`` needs ``descriptors`` [T, F]; ``disagreement`` needs ``scores`` [T] (higher:
    picked first); ``random`` needs only ``n_candidates`` and ``seed``.
    """
    if method not in METHODS:
        raise ValueError(f"screening.method={method!r} is unknown; use one of {list(METHODS)}")
    total = next(len(a) for a in (descriptors, scores, range(n_candidates or 0)) if a is not None)
    if not 1 <= n_frames <= total:
        raise ValueError(
            f"cannot select {n_frames} of {total} candidate frames; set screening.fraction so "
            "that at least one and at most all training frames are picked"
        )
    if method == "random":
        return np.random.default_rng(seed).choice(total, n_frames, replace=False)
    if method == "disagreement":
        if scores is None:
            raise ValueError("disagreement screening needs the teachers' force spread per frame")
        return np.argsort(-np.asarray(scores), kind="stable")[:n_frames]
    if descriptors is None:
        raise ValueError("fps screening needs per-frame descriptors")
    return farthest_point_sampling(standardise(descriptors), n_frames)


def standardise(values: np.ndarray) -> np.ndarray:
    """Each feature shifted to mean 0 and scaled to unit variance (constant ones left at 0)."""
    spread = values.std(0)
    return (values - values.mean(0)) / np.where(spread > 0, spread, 1.0)


def farthest_point_sampling(points: np.ndarray, n: int) -> np.ndarray:
    """Greedy max-min selection of ``n`` rows of ``points`` [T, F], starting from the row
    farthest from the mean; each next pick is the row farthest from all picked so far."""
    picked = [int(np.argmax(((points - points.mean(0)) ** 2).sum(1)))]
    nearest = ((points - points[picked[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        picked.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((points - points[picked[-1]]) ** 2).sum(1))
    return np.asarray(picked)
