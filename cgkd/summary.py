"""``cgkd summarize DIR ... [--output DIR]``: one table, mean +- std over seeds, of a sweep.

Every ``cgkd run`` writes a one-line ``result.json`` (:class:`cgkd.results.ResultLine`).
This command collects those lines at or below the given directories and groups them into
rows: a student row per setting of the sweep (its Hydra overrides without ``seed``), and one
row each for the baseline, the classical model, the single teacher and the ensemble, which do
not depend on the loss. A model trained once and reused by several runs (same cache key)
counts once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cgkd.comparison import hydra_overrides
from cgkd.results import METRICS, RESULT_FILE, Metric, ModelResult, ResultLine

#: Models that do not depend on the student's loss, in row order.
LOSS_FREE = ("baseline", "classical", "teacher", "ensemble")


@dataclass
class SummaryRow:
    """One row: a model in one setting, with its per-seed values of every column."""

    label: str
    model: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seed: int, entry: ModelResult) -> None:
        """Add one seed's result entry of this model."""
        self.seeds.append(seed)
        for metric in METRICS:
            value = entry.value(metric.name)
            if value is not None:
                self.values.setdefault(metric.name, []).append(float(value))

    def mean_std(self, name: str) -> tuple[float, float] | None:
        """Mean and sample std (0 with one seed) of a column, or None when never measured."""
        values = self.values.get(name)
        if not values:
            return None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), std

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: label, model, seeds, and mean/std/values per column."""
        columns = {}
        for metric in METRICS:
            stats = self.mean_std(metric.name)
            if stats is not None:
                values = self.values[metric.name]
                columns[metric.name] = {"mean": stats[0], "std": stats[1], "values": values}
        return {"label": self.label, "model": self.model, "seeds": self.seeds, **columns}


def find_results(paths: list[Path]) -> list[Path]:
    """Every ``result.json`` at or below ``paths``, in order, each once."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory; pass run or sweep directories")
        results = sorted(path.rglob(RESULT_FILE))
        if not results:
            raise FileNotFoundError(
                f"no {RESULT_FILE} at or below {path}; run `cgkd run` (or a --multirun) there"
            )
        found += [result for result in results if result not in found]
    return found


def summarize(paths: list[Path]) -> list[SummaryRow]:
    """The rows of every run's result below ``paths``: loss-free models first, then one
    student row per setting (the run's overrides without seed and without those every run
    shares), each with one value per distinct model (seed)."""
    runs = [(path, hydra_overrides(path.parent)) for path in find_results(paths)]
    shared = set.intersection(*(set(overrides) for _, overrides in runs))
    rows: dict[str, SummaryRow] = {}
    counted: set[str] = set()
    for path, overrides in runs:
        result = ResultLine.from_json(json.loads(path.read_text()))
        setting = [o for o in overrides if o not in shared and not o.startswith("seed=")]
        for model, entry in result.models.items():
            if entry.key in counted:
                continue
            counted.add(entry.key)
            kept = setting
            if model in LOSS_FREE:
                kept = [item for item in setting if not item.startswith("loss")]
            label = f"{model} ({' '.join(kept)})" if kept else model
            rows.setdefault(label, SummaryRow(label, model)).add(result.run.seed, entry)
    order = {model: k for k, model in enumerate(LOSS_FREE)}
    return sorted(rows.values(), key=lambda row: order.get(row.model, len(order)))


def cell(row: SummaryRow, metric: Metric) -> str:
    """The cell "mean ± std" of a metric in its format (empty when not measured)."""
    stats = row.mean_std(metric.name)
    if stats is None:
        return ""
    mean, std = stats
    return f"{metric.format(mean)} ± {metric.format(std)}"


def columns(rows: list[SummaryRow]) -> list[Metric]:
    """The metrics any of ``rows`` has values of, in :data:`cgkd.results.METRICS` order."""
    return [m for m in METRICS if any(row.values.get(m.name) for row in rows)]


def markdown_table(rows: list[SummaryRow], labels: dict[str, str] | None = None) -> list[str]:
    """Markdown lines of the table; ``labels`` renames rows (label -> shown name)."""
    labels = labels or {}
    shown = columns(rows)
    lines = [
        "| model | seeds | " + " | ".join(metric.header for metric in shown) + " |",
        "|---|---:" + "|---:" * len(shown) + "|",
    ]
    for row in rows:
        cells = [cell(row, metric) for metric in shown]
        lines.append(
            f"| {labels.get(row.label, row.label)} | {len(row.seeds)} | " + " | ".join(cells) + " |"
        )
    return lines


def plot_summary(
    rows: list[SummaryRow], path: Path, title: str = "", labels: dict[str, str] | None = None
) -> Path:
    """One panel per column: each row's mean (blue) with its std as error bar and the single
    seeds as grey dots; PNG at ``path`` and an SVG beside it."""
    labels = labels or {}
    shown = columns(rows)
    n_columns = 3
    n_rows = -(-len(shown) // n_columns)
    figure = Figure(figsize=(5.0 * n_columns, 0.35 * len(rows) * n_rows + 2.0 * n_rows))
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    names = [labels.get(row.label, row.label) for row in rows]
    positions = np.arange(len(rows))
    for ax, metric in zip(axes, shown, strict=False):
        means = [row.mean_std(metric.name) for row in rows]
        for k, row in enumerate(rows):
            values = row.values.get(metric.name, [])
            ax.plot(values, [k] * len(values), ".", color="0.6", markersize=5)
        ax.errorbar(
            [m[0] if m else np.nan for m in means],
            positions,
            xerr=[m[1] if m else 0.0 for m in means],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
        ax.grid(axis="x", alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))  # divergences of 1e-5
        if metric.name == "stable_fraction":
            ax.set_xlim(-0.05, 1.05)
        ax.set_yticks(positions, names if ax in axes[::n_columns] else [""] * len(rows))
        ax.invert_yaxis()
        ax.set_xlabel(metric.header)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.98 if title else 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    figure.savefig(path.with_suffix(".svg"))
    return path


def write_summary(
    rows: list[SummaryRow],
    output_dir: Path,
    title: str,
    labels: dict[str, str] | None = None,
    notes: list[str] | tuple[str, ...] = (),
) -> Path:
    """``summary.md`` (``notes`` under the title, the table and its figure), ``summary.json``
    and ``summary.png``/``.svg`` in ``output_dir``; returns the markdown path. With
    ``labels`` (row label -> shown name) the rows named there come first, in its order."""
    if labels:
        order = {label: k for k, label in enumerate(labels)}
        rows = sorted(rows, key=lambda row: order.get(row.label, len(order)))
    output_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_summary(rows, output_dir / "summary.png", title, labels)
    (output_dir / "summary.json").write_text(
        json.dumps([row.to_dict() for row in rows], indent=2) + "\n"
    )
    lines = [
        f"# {title}",
        "",
        *(f"{note}\n" for note in notes),
        "Each cell: mean ± sample std over the seeds (one trained model and one CG MD run per "
        "seed). Deviations are from the AA-mapped reference: RDF mean absolute deviation, "
        "Jensen-Shannon divergences of the ADF and order-parameter distributions, CG over AA "
        "diffusion coefficient.",
        "",
        *markdown_table(rows, labels),
        "",
        f"![summary]({figure.name})",
        "",
    ]
    path = output_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str]) -> None:
    """``cgkd summarize`` command line."""
    parser = argparse.ArgumentParser(prog="cgkd summarize", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--output", "-o", type=Path, default=Path("summary"))
    parser.add_argument("--title", default="cgkd sweep summary")
    args = parser.parse_args(argv)
    try:
        rows = summarize(args.runs)
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as error:
        raise SystemExit(f"cgkd summarize: {error}") from error
    path = write_summary(rows, args.output, args.title)
    print("\n".join(markdown_table(rows)))
    print(path)
