"""Deviations between a reference observable and others: one metric per kind of observable.

- curves (g(r), n(r), S(q)): mean absolute deviation over bins, in the units of y, and the
  relative integrated deviation (dimensionless);
- distributions (angles, order parameters, counts, densities, CDF maps): Jensen-Shannon
  divergence in bits (0 identical, 1 disjoint) and, where the result has one, the difference of
  the means;
- bond lengths: as distributions, and the share of the lengths outside the range the
  reference visits (:func:`outside_fraction`);
- dynamics (MSD): the ratio of the diffusion coefficients and its relative error.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cgkd.observables.base import ObservableResult
from cgkd.observables.dynamics import diffusion_ratio

#: Result-name prefixes of curves compared point by point (everything else with a 1/x density
#: or a probability is a distribution).
CURVES = ("rdf", "n(r)", "S(q)")
#: Result-name prefixes of dynamics compared through their diffusion coefficient.
DYNAMICS = ("msd",)
#: Result-name prefixes of distributions with a range the reference never leaves (bonds).
BOUNDED = ("bonds",)
#: The reference's range of a bounded distribution: from the bin where its cumulative
#: probability passes the first value to the bin where it reaches the second.
REFERENCE_RANGE = (0.001, 0.999)


def mean_absolute_deviation(ref: ObservableResult, other: ObservableResult) -> float:
    """Mean over bins of ``|other.y - ref.y|``, in the units of y (e.g. g(r) or 1/deg)."""
    _check_same_bins(ref, other)
    return float(np.mean(np.abs(other.y - ref.y)))


def relative_integrated_deviation(ref: ObservableResult, other: ObservableResult) -> float:
    """Integral of ``|other.y - ref.y|`` over the integral of ``|ref.y|`` (dimensionless; 0 is
    identical).

    On uniform bins the integrals are bin sums; unlike the mean absolute deviation it does not
    depend on the scale of y, so RDF and ADF deviations can be put side by side.
    """
    _check_same_bins(ref, other)
    reference = np.sum(np.abs(ref.y))
    if reference == 0:
        raise ValueError(f"reference {ref.name!r} is zero everywhere; use mean_absolute_deviation")
    return float(np.sum(np.abs(other.y - ref.y)) / reference)


def jensen_shannon_divergence(ref: ObservableResult, other: ObservableResult) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) of two distributions on the same bins.

    Both ``y`` are made probabilities per bin by dividing by their sums, so densities and
    counts on uniform bins (1-D or 2-D) compare alike.
    """
    _check_same_bins(ref, other)
    p, q = (_probabilities(r) for r in (ref, other))
    m = 0.5 * (p + q)
    return float(0.5 * (_kullback_leibler(p, m) + _kullback_leibler(q, m)))


def outside_fraction(ref: ObservableResult, other: ObservableResult) -> float:
    """The probability of ``other`` in the bins outside the reference's range (the bins from
    where the reference's cumulative probability passes 0.1 % to where it reaches 99.9 %,
    :data:`REFERENCE_RANGE`); about 0 for a model that stays where the reference goes."""
    _check_same_bins(ref, other)
    cumulative = np.cumsum(_probabilities(ref))
    low, high = np.searchsorted(cumulative, REFERENCE_RANGE)
    probabilities = _probabilities(other)
    # summed outside, not 1 - inside, so that a model inside the range gives exactly 0
    return float(probabilities[: int(low)].sum() + probabilities[int(high) + 1 :].sum())


def deviation(ref: ObservableResult, other: ObservableResult) -> dict[str, float]:
    """The metrics that fit the kind of observable (see the module docstring), by name."""
    if ref.name.startswith(DYNAMICS):
        ratio, error = diffusion_ratio(other, ref)
        return {"D ratio": ratio, "D ratio err": error, "D rel. error": abs(ratio - 1.0)}
    if ref.name.startswith(CURVES):
        return {
            "MAD": mean_absolute_deviation(ref, other),
            "rel. deviation": relative_integrated_deviation(ref, other),
        }
    metrics = {"JSD": jensen_shannon_divergence(ref, other)}
    if "mean" in ref.attrs and "mean" in other.attrs:
        metrics["mean diff."] = float(other.attrs["mean"] - ref.attrs["mean"])
    if ref.name.startswith(BOUNDED):
        metrics["outside AA range"] = outside_fraction(ref, other)
    return metrics


def compare(
    ref: ObservableResult,
    others: dict[str, ObservableResult],
    metric: Callable[[ObservableResult, ObservableResult], float] = mean_absolute_deviation,
) -> dict[str, float]:
    """``metric(ref, other)`` for each labelled result in ``others``, keyed by the same labels."""
    return {label: metric(ref, other) for label, other in others.items()}


def _probabilities(result: ObservableResult) -> np.ndarray:
    y = np.nan_to_num(result.y.ravel(), nan=0.0)
    if np.any(y < 0) or y.sum() <= 0:
        raise ValueError(
            f"{result.name!r} is not a distribution (negative or all-zero values); "
            "compare it with mean_absolute_deviation"
        )
    return y / y.sum()


def _kullback_leibler(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / q[mask])))


def _check_same_bins(ref: ObservableResult, other: ObservableResult) -> None:
    """Raise ValueError unless both results share the same bin centres."""
    for axis in ("x", "x2"):
        a, b = getattr(ref, axis), getattr(other, axis)
        if a is None and b is None:
            continue
        if a is None or b is None or a.shape != b.shape or not np.allclose(a, b, 1e-9, 1e-12):
            raise ValueError(
                f"{other.name!r} and reference {ref.name!r} have different {axis} bins; "
                "compute both with the same observable settings"
            )
