"""Scalar deviations between a reference observable and others on the same bins."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cgkd.observables.base import ObservableResult


def mean_absolute_deviation(ref: ObservableResult, other: ObservableResult) -> float:
    """Mean over bins of |other.y - ref.y|, in the units of y (e.g. g(r) or 1/deg)."""
    _check_same_bins(ref, other)
    return float(np.mean(np.abs(other.y - ref.y)))


def relative_integrated_deviation(ref: ObservableResult, other: ObservableResult) -> float:
    """Integral of |other.y - ref.y| over the integral of |ref.y| (dimensionless; 0 is identical).

    On uniform bins the integrals are bin sums; unlike the mean absolute deviation it does not
    depend on the scale of y, so RDF and ADF deviations can be put side by side.
    """
    _check_same_bins(ref, other)
    reference = np.sum(np.abs(ref.y))
    if reference == 0:
        raise ValueError(f"reference {ref.name!r} is zero everywhere; use mean_absolute_deviation")
    return float(np.sum(np.abs(other.y - ref.y)) / reference)


def compare(
    ref: ObservableResult,
    others: dict[str, ObservableResult],
    metric: Callable[[ObservableResult, ObservableResult], float] = mean_absolute_deviation,
) -> dict[str, float]:
    """``metric(ref, other)`` for each labelled result in ``others``, keyed by the same labels."""
    return {label: metric(ref, other) for label, other in others.items()}


def _check_same_bins(ref: ObservableResult, other: ObservableResult) -> None:
    """Raise ValueError unless both results share the same bin centres."""
    if ref.x.shape != other.x.shape or not np.allclose(ref.x, other.x, rtol=1e-9, atol=1e-12):
        raise ValueError(
            f"{other.name!r} and reference {ref.name!r} have different bins "
            f"({len(other.x)} vs {len(ref.x)} bins over [{other.x[0]:.4g}, {other.x[-1]:.4g}] vs "
            f"[{ref.x[0]:.4g}, {ref.x[-1]:.4g}]); compute both with the same observable settings"
        )
