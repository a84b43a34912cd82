"""Many observables of many sources (the AA reference, models, runs of a sweep): deviation
tables, scalar summaries and figures, shared by the run report and ``cgkd compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cgkd.observables.base import ObservableResult
from cgkd.observables.compare import deviation
from cgkd.observables.plots import plot_comparison, plot_maps
from cgkd.observables.suite import FIGURES, figure_of

#: Observables: {source label: {result name: result}}.
Curves = dict[str, dict[str, ObservableResult]]

#: Scalars summarised per source: (label, result name, attrs key, unit).
SCALARS = (
    ("D", "msd", "D", "nm²/ps"),
    ("mean tetrahedral q", "tetrahedral", "mean", ""),
    ("mean q4", "q4", "mean", ""),
    ("mean q6", "q6", "mean", ""),
    ("mean coordination number", "coordination numbers", "mean", ""),
    ("mean local density", "local density", "mean", "nm⁻³"),
)


def compare_sources(curves: Curves, reference: str) -> dict[str, dict[str, dict[str, float]]]:
    """{observable: {source: {metric: value}}} of every source against ``reference``, for the
    observables both have (see :func:`cgkd.observables.compare.deviation` for the metrics)."""
    if reference not in curves:
        raise ValueError(f"reference {reference!r} is not among the sources {list(curves)}")
    table: dict[str, dict[str, dict[str, float]]] = {}
    for name, ref in curves[reference].items():
        row = {
            source: deviation(ref, results[name])
            for source, results in curves.items()
            if source != reference and name in results
        }
        if row:
            table[name] = row
    return table


def scalars(curves: Curves) -> dict[str, dict[str, dict[str, float]]]:
    """{quantity: {source: {"value", "error", "unit"}}} of the :data:`SCALARS` each source has."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for label, name, key, unit in SCALARS:
        for source, results in curves.items():
            result = results.get(name)
            if result is not None and key in result.attrs:
                table.setdefault(label, {})[source] = {
                    "value": float(result.attrs[key]),
                    "error": float(result.attrs.get(f"{key}_err", float("nan"))),
                    "unit": unit,
                }
    return table


def plot_sources(curves: Curves, output_dir: str | Path) -> dict[str, Path]:
    """Overlay figures (one per group of :data:`FIGURES`, plus one map per 2-D observable) of
    every source; returns {figure name: PNG path}, an SVG beside each."""
    output_dir = Path(output_dir)
    names = list(dict.fromkeys(name for results in curves.values() for name in results))
    figures: dict[str, Path] = {}
    for group in FIGURES:
        panels = {
            name: {source: results[name] for source, results in curves.items() if name in results}
            for name in names
            if not _is_2d(curves, name) and figure_of(name) == group
        }
        if panels:
            figures[group] = plot_comparison(panels, output_dir / f"{group}.png")
    for name in names:
        if _is_2d(curves, name):
            by_source = {s: results[name] for s, results in curves.items() if name in results}
            figures[name] = plot_maps(by_source, output_dir / f"{name.replace(' ', '_')}.png")
    return figures


def save_curves(curves: Curves, path: str | Path) -> Path:
    """Write every result of every source as JSON (see :func:`load_curves`)."""
    path = Path(path)
    data = {
        source: {n: r.to_dict() for n, r in results.items()} for source, results in curves.items()
    }
    path.write_text(json.dumps(data))
    return path


def load_curves(path: str | Path) -> Curves:
    """The observables a run saved with :func:`save_curves` (its ``observables.json``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `cgkd run` (or analyze) first")
    data = json.loads(path.read_text())
    return {
        source: {name: ObservableResult.from_dict(r) for name, r in results.items()}
        for source, results in data.items()
    }


def _is_2d(curves: Curves, name: str) -> bool:
    return any(results[name].is_2d for results in curves.values() if name in results)
