"""Comparison figure: one panel per observable, one curve with error band per source."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from cgkd.observables.base import ObservableResult


def plot_comparison(results: dict[str, dict[str, ObservableResult]], path: str | Path) -> Path:
    """Save a PNG at ``path`` with a panel per observable and a curve per source; return the path.

    ``results`` maps observable name (e.g. "rdf", "adf") to {source label: result}, e.g.
    {"rdf": {"AA (mapped)": ..., "baseline": ..., "student": ...}, "adf": {...}}. Bands are +- yerr.
    """
    if not results or not all(results.values()):
        raise ValueError("results must map each observable to at least one {source: result}")
    path = Path(path)
    figure = Figure(figsize=(5.0 * len(results), 4.0), layout="constrained")
    axes = figure.subplots(1, len(results), squeeze=False)[0]
    for ax, (observable, by_source) in zip(axes, results.items(), strict=True):
        for source, result in by_source.items():
            (line,) = ax.plot(result.x, result.y, label=source)
            ax.fill_between(
                result.x,
                result.y - result.yerr,
                result.y + result.yerr,
                color=line.get_color(),
                alpha=0.25,
                linewidth=0,
            )
        first = next(iter(by_source.values()))
        ax.set_title(observable)
        ax.set_xlabel(first.x_label)
        ax.set_ylabel(first.y_label)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path
