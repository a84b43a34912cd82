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

from dataclasses import dataclass

import numpy as np

#: Selection methods.
METHODS = ("fps", "random", "disagreement")


@dataclass
class Descriptors:
    """Per-frame descriptors [T, F] and the name of each of the F features."""

    values: np.ndarray
    names: list[str]


def frame_descriptors(
    positions: np.ndarray,
    boxes: np.ndarray,
    types: np.ndarray,
    type_names: list[str],
    *,
    r_max: float,
    n_bins: int,
) -> Descriptors:
    """Pair-distance histograms (g(r)-normalised, ``n_bins`` bins up to ``r_max`` nm) and
    closest distances (nm) of every species pair, per frame (positions [T, N, 3], boxes
    [T, 3, 3], nm). ``r_max`` must not exceed half the box's smallest width."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    species = sorted(set(types.tolist()))
    pairs = [(a, b) for i, a in enumerate(species) for b in species[i:]]
    names = [
        f"{kind} {type_names[a]}-{type_names[b]}{suffix}"
        for a, b in pairs
        for kind, suffix in [
            *(("g", f" {edges[k]:.3f}-{edges[k + 1]:.3f} nm") for k in range(n_bins)),
            ("closest", " nm"),
        ]
    ]
    first, second = np.triu_indices(len(types), k=1)
    pair_of = {pair: k for k, pair in enumerate(pairs)}
    low, high = np.minimum(types[first], types[second]), np.maximum(types[first], types[second])
    index = np.array([pair_of[(int(a), int(b))] for a, b in zip(low, high, strict=True)])
    counts = np.bincount(types, minlength=max(species) + 1)
    values = np.empty((len(positions), len(names)))
    for frame, (x, box) in enumerate(zip(positions, boxes, strict=True)):
        delta = x[second] - x[first]
        fractional = delta @ np.linalg.inv(box)
        delta = (fractional - np.round(fractional)) @ box
        distance = np.sqrt((delta * delta).sum(1))
        volume = abs(np.linalg.det(box))
        row = []
        for k, (a, b) in enumerate(pairs):
            mine = distance[index == k]
            n_pairs = counts[a] * (counts[a] - 1) / 2 if a == b else counts[a] * counts[b]
            histogram = np.histogram(mine, edges)[0]
            row += [*(histogram / (n_pairs / volume * shell)), mine.min() if len(mine) else r_max]
        values[frame] = row
    return Descriptors(values, names)


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
