"""Comparison figures: overlays of curves with error bands, and side-by-side 2-D maps.

Every figure is written as PNG (for reports) and SVG (for papers) next to each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cgkd.observables.base import ObservableResult


def plot_comparison(
    results: dict[str, dict[str, ObservableResult]], path: str | Path, columns: int = 3
) -> Path:
    """Save a figure with a panel per observable and a curve per source; return the PNG path.

    ``results`` maps observable name (e.g. "rdf", "adf") to {source label: result}, e.g.
    {"rdf": {"AA (mapped)": ..., "baseline": ..., "student": ...}, "adf": {...}}. Bands are
    +- yerr. Panels fill ``columns`` per row; an SVG is written beside the PNG.
    """
    if not results or not all(results.values()):
        raise ValueError("results must map each observable to at least one {source: result}")
    flat = [r for by_source in results.values() for r in by_source.values()]
    if any(r.is_2d for r in flat):
        raise ValueError("2-D results (CDF maps) go to plot_maps, not plot_comparison")
    n_columns = min(columns, len(results))
    n_rows = -(-len(results) // n_columns)
    figure = Figure(figsize=(4.6 * n_columns, 3.6 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for ax, (observable, by_source) in zip(axes, results.items(), strict=False):
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
        ax.legend(fontsize="small")
    for ax in axes[len(results) :]:
        ax.set_visible(False)
    return _save(figure, path)


def plot_maps(by_source: dict[str, ObservableResult], path: str | Path) -> Path:
    """Save 2-D maps (e.g. the CDF) of each source side by side, with the first source's map
    subtracted from the others in a second row; return the PNG path (an SVG goes beside it)."""
    if not by_source or not all(r.is_2d for r in by_source.values()):
        raise ValueError("plot_maps needs at least one 2-D result (x, x2) per source")
    sources = list(by_source)
    reference = by_source[sources[0]]
    n_rows = 2 if len(sources) > 1 else 1
    figure = Figure(figsize=(4.2 * len(sources), 3.6 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, len(sources), squeeze=False)
    top = max(float(np.nanmax(r.y)) for r in by_source.values())
    extent = _extent(reference)
    for column, source in enumerate(sources):
        result = by_source[source]
        image = axes[0, column].imshow(
            result.y, origin="lower", aspect="auto", extent=extent, vmin=0.0, vmax=top
        )
        axes[0, column].set_title(source)
        axes[0, column].set_xlabel(result.x2_label)
        axes[0, column].set_ylabel(result.x_label)
        if n_rows == 2:
            ax = axes[1, column]
            if column == 0:
                ax.set_visible(False)
                continue
            difference = result.y - reference.y
            limit = float(np.nanmax(np.abs(difference))) or 1.0
            diff_image = ax.imshow(
                difference,
                origin="lower",
                aspect="auto",
                extent=extent,
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
            )
            ax.set_title(f"{source} - {sources[0]}")
            ax.set_xlabel(result.x2_label)
            ax.set_ylabel(result.x_label)
            figure.colorbar(diff_image, ax=ax)
    figure.colorbar(image, ax=axes[0, -1], label=reference.y_label)
    return _save(figure, path)


def _extent(result: ObservableResult) -> tuple[float, float, float, float]:
    """imshow extent (x2 along the horizontal axis, x vertical) from the bin centres."""
    assert result.x2 is not None
    dx = result.x[1] - result.x[0] if len(result.x) > 1 else 1.0
    dx2 = result.x2[1] - result.x2[0] if len(result.x2) > 1 else 1.0
    return (
        result.x2[0] - dx2 / 2,
        result.x2[-1] + dx2 / 2,
        result.x[0] - dx / 2,
        result.x[-1] + dx / 2,
    )


def _save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as ``path`` (PNG) and the same name with .svg; return the PNG path."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    figure.savefig(path.with_suffix(".svg"))
    return path
