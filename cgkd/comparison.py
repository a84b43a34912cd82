"""``cgkd compare RUN_DIR ... [--output DIR]``: one report over several pipeline runs.

Each run directory (or any directory above run directories, such as a Hydra multirun sweep)
holds the ``observables.json`` and ``metrics.json`` that ``cgkd run`` writes. The report has one
row per run and model with its deviations from the AA reference, its stability and speed, and
overlay figures of every model of every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cgkd.observables.sources import Curves, compare_sources, load_curves, plot_sources
from cgkd.report import metrics_table
from cgkd.results import CURVES_FILE, METRICS_FILE, REFERENCE, ModelResult, RunResult


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (with ``observables.json``) at or below each of ``paths``, in order."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a directory; pass cgkd run output directories")
        found = sorted(p.parent for p in path.rglob(CURVES_FILE))
        if not found:
            raise FileNotFoundError(
                f"no observables.json at or below {path}; run `cgkd run` there first"
            )
        runs += [run for run in found if run not in runs]
    return runs


def hydra_overrides(run: Path) -> list[str]:
    """The command-line overrides a Hydra job ran with (not hydra.*), [] if none recorded."""
    overrides = run / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return []
    return [str(o) for o in OmegaConf.load(overrides) if not str(o).startswith("hydra")]


def run_label(run: Path, root: Path) -> str:
    """A short name for a run: its Hydra overrides when it was a sweep job, else its path."""
    items = hydra_overrides(run)
    if items:
        return " ".join(items)
    return str(run.relative_to(root)) if run.is_relative_to(root) and run != root else run.name


def compare_runs(paths: list[Path], output_dir: Path) -> Path:
    """Write ``comparison.md``, ``comparison.json`` and the figures into ``output_dir``; the AA
    reference is the first run's. Returns the markdown path."""
    runs = find_runs(paths)
    root = paths[0].resolve() if len(paths) == 1 else Path.cwd().resolve()
    curves: Curves = {}
    rows: list[tuple[list[str], ModelResult]] = []
    records: list[dict[str, Any]] = []
    labels = [run_label(run.resolve(), root) for run in runs]
    if len(set(labels)) < len(labels):
        labels = [str(run) for run in runs]
    for run, label in zip(runs, labels, strict=True):
        run_curves = load_curves(run / CURVES_FILE)
        result = RunResult.from_json(json.loads((run / METRICS_FILE).read_text()))
        if not curves:
            curves[REFERENCE] = run_curves[REFERENCE]
        deviations = compare_sources(
            {REFERENCE: curves[REFERENCE], **_without(run_curves)}, REFERENCE
        )
        against_first = dataclasses.replace(result, observables=deviations)
        for model, results in _without(run_curves).items():
            curves[f"{label}: {model}"] = results
            entry = against_first.model_result(model)
            rows.append(([label, model], entry))
            records.append({"run": label, "model": model, "path": str(run), **entry.to_json()})
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_sources(curves, output_dir)
    (output_dir / "comparison.json").write_text(json.dumps(records, indent=2))
    lines = [
        f"# cgkd comparison of {len(runs)} runs",
        "",
        f"Reference: the AA-mapped observables of {runs[0]}. Metrics as in each run's report.md.",
        "",
        *metrics_table(["run", "model"], rows),
        "",
        *(f"![{name}]({path.name})\n" for name, path in figures.items()),
    ]
    path = output_dir / "comparison.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str]) -> None:
    """``cgkd compare`` command line."""
    parser = argparse.ArgumentParser(prog="cgkd compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or a sweep directory")
    parser.add_argument("--output", "-o", type=Path, default=Path("comparison"))
    args = parser.parse_args(argv)
    try:
        path = compare_runs(args.runs, args.output)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(f"cgkd compare: {error}") from error
    print(path)


def _without(curves: Curves) -> Curves:
    return {source: results for source, results in curves.items() if source != REFERENCE}
