"""Two-stage distillation: accuracy and stability against the number of hard-target frames.

For each system one Hydra multirun of ``cgkd run schedule=two_stage`` over the screening
method (fps, random) and the fraction of the reference training frames that get hard
(mapped-force) labels. Every run gives two models: the two-stage student (soft targets from
teacher MD, then fine-tuned on the hard frames) and the single-stage baseline (force matching
on the same hard frames alone). The soft-stage student alone is the zero-frame point.

- water: the teacher is a pre-trained model of another water model, not fine-tuned: the
  4-member ensemble trained on TIP3P water (``cgkd teach system=water``), used as a
  TorchScript file (``teacher.source=torchscript``); the reference (hard targets) is OPC
  water. This is the second paper's setting: a cheap teacher that is not the reference.
- reline: the teacher is the run's own ensemble, trained on all reference frames, so the
  curve shows what the hard stage adds on top of a teacher that has seen everything; it does
  not test the label saving.

    python benchmarks/hard_targets.py --system water reline

Writes ``docs/two_stage/<system>/curves.{png,svg,json}`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cgkd_runs import run_cgkd  # noqa: E402  (benchmarks/, this script's directory)

from cgkd.comparison import hydra_overrides  # noqa: E402
from cgkd.results import RESULT_FILE, metric  # noqa: E402

#: Settings of every run: 12 student epochs per stage, 10 ps of CG MD per model.
COMMON = [
    "data_seed=0",
    "schedule=two_stage",
    "student.train.epochs=12",
    "simulate.steps=2000",
    "simulate.report_interval=50",
    "simulate.models=[student,baseline]",
    "progress=false",
]
FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Per system: its overrides, and the overrides of the run that trains its external teacher.
SYSTEMS: dict[str, tuple[list[str], list[str] | None]] = {
    "water": (["system=water_opc"], ["system=water", "data_seed=0", "seed=0"]),
    "reline": (["experiment=reline", "system.npt_equilibration=50.0"], None),
}


def teacher_file(work: Path, overrides: list[str], threads: int) -> Path:
    """Train (or reuse) the ensemble of ``overrides`` in ``work/cache``; its TorchScript file."""
    run_cgkd(["teach", *overrides, "progress=false"], work, threads, "teacher ensemble")
    from hydra import compose, initialize_config_dir

    from cgkd.stages import Pipeline

    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("config", overrides=[*overrides, f"cache_dir={work / 'cache'}"])
    return Path(Pipeline(cfg).run("teach")["dir"]) / "ensemble.ts"


def run_sweep(
    system: str,
    work: Path,
    threads: int,
    seeds: list[int],
    fractions: list[float],
    screenings: list[str],
    extra: list[str],
    name: str,
) -> Path:
    """The multirun of ``system`` (with ``extra`` overrides) in ``work/sweep-two-stage-<name>``."""
    overrides, teacher_run = SYSTEMS[system]
    if teacher_run is not None:
        path = teacher_file(work, teacher_run, threads).resolve()
        overrides = [*overrides, "teacher.source=torchscript", f"teacher.path={path}"]
    sweep = work / f"sweep-two-stage-{name}"
    args = [
        "run",
        "--multirun",
        *overrides,
        *COMMON,
        *extra,
        f"simulate.threads={threads}",
        f"screening={','.join(screenings)}",
        f"screening.fraction={','.join(map(str, fractions))}",
        f"seed={','.join(map(str, seeds))}",
        f"hydra.sweep.dir={sweep}",
    ]
    run_cgkd(args, work, threads, f"{name}: sweep")
    return sweep


def collect(sweep: Path) -> list[dict[str, Any]]:
    """One point per run: screening, fraction, hard frames, and both models' results."""
    points = []
    for result in sorted(sweep.glob(f"*/{RESULT_FILE}")):
        line = json.loads(result.read_text())
        overrides = dict(item.split("=", 1) for item in hydra_overrides(result.parent))
        points.append(
            {
                "screening": line["screening"],
                "fraction": float(overrides["screening.fraction"]),
                "seed": line["seed"],
                "n_hard": line["n_hard"],
                "soft_only_force_rmse_mapped": line["soft_only_force_rmse_mapped"],
                "soft_only_force_rmse_soft": line.get("soft_only_force_rmse_soft"),
                "student": line["models"]["student"],
                "baseline": line["models"]["baseline"],
            }
        )
    return points


#: Marker of each screening method's curves.
MARKERS = {"fps": "o", "random": "s", "disagreement": "^"}


def curves(points: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(label, model, screening, style) of every curve: two-stage (solid) and single-stage on
    the same frames (dashed) for each screening method in ``points``."""
    methods = sorted({p["screening"] for p in points}, key=list(MARKERS).index)
    picked = {m: "random" if m == "random" else f"screened ({m})" for m in methods}
    return [
        *((f"two-stage, {picked[m]}", "student", m, f"-{MARKERS[m]}") for m in methods),
        *((f"single-stage, {picked[m]} frames", "baseline", m, f"--{MARKERS[m]}") for m in methods),
    ]


#: Panels of the figure, by result field (labels: cgkd.results.METRICS).
METRICS = ("force_rmse_mapped", "rdf_mad", "adf_jsd", "force_rmse_soft")


def curve(points: list[dict[str, Any]], model: str, screening: str, metric: str) -> list:
    """[(n_hard, mean, std, stable fraction)] over seeds, by number of hard frames."""
    by_n: dict[int, list[dict[str, Any]]] = {}
    for point in points:
        if point["screening"] == screening and metric in point[model]:
            by_n.setdefault(point["n_hard"], []).append(point[model])
    return [
        (
            n,
            float(np.mean([r[metric] for r in rows])),
            float(np.std([r[metric] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
            float(np.mean([r["stable_fraction"] for r in rows])),
        )
        for n, rows in sorted(by_n.items())
    ]


def plot(points: list[dict[str, Any]], title: str, out: Path) -> None:
    """Each metric against the number of hard frames (log axis); x: some run went unstable."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * len(METRICS), 4.2), layout="constrained")
    axes = figure.subplots(1, len(METRICS))
    soft = [p["soft_only_force_rmse_mapped"] for p in points]
    for ax, column in zip(axes, METRICS, strict=True):
        for name, model, screening, style in curves(points):
            rows = curve(points, model, screening, column)
            if not rows:
                continue
            n, mean, std, stable = (np.asarray(c) for c in zip(*rows, strict=True))
            line = ax.errorbar(n, mean, std, fmt=style, label=name, capsize=3)[0]
            unstable = stable < 1
            ax.plot(n[unstable], mean[unstable], "x", color=line.get_color(), ms=10)
        if column == "force_rmse_mapped":
            ax.axhline(np.mean(soft), color="grey", ls=":", label="soft stage only (0 hard)")
        if column == "force_rmse_soft" and (start := _recorded(points)):
            ax.axhline(np.mean(start), color="grey", ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("hard-target (reference) frames")
        ax.set_ylabel(metric(column).header)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{title} (x: a run went unstable)")
    for suffix in (".png", ".svg"):
        figure.savefig(out.with_suffix(suffix), dpi=130)


def soft_errors(points: list[dict[str, Any]], model: str, screening: str) -> dict[int, str]:
    """{n_hard: cell} of the error against the teacher on held-out soft frames, mean over
    seeds: "soft stage -> fine-tuned" for the student, the baseline's own value."""
    rows = curve(points, model, screening, "force_rmse_soft")
    start = f"{np.mean(_recorded(points)):.1f} -> " if model == "student" and rows else ""
    return {n: f"{start}{mean:.1f}" for n, mean, _, _ in rows}


def _recorded(points: list[dict[str, Any]]) -> list[float]:
    """The soft-stage student's error against the teacher, where the runs recorded it."""
    return [p["soft_only_force_rmse_soft"] for p in points if p["soft_only_force_rmse_soft"]]


def table(points: list[dict[str, Any]], command: str, title: str) -> str:
    """Markdown: every curve's points, with each model's error against the teacher on held-out
    soft frames (the two-stage student's before -> after fine-tuning: what it forgot)."""
    lines = [
        f"# Two-stage distillation: {title}",
        "",
        f"Regenerate: `{command}`",
        "",
        "| curve | hard frames | force RMSE vs mapped (kJ/mol/nm) | RDF MAD | ADF JSD | stable "
        "| vs teacher on soft frames (kJ/mol/nm) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    soft = [p["soft_only_force_rmse_mapped"] for p in points]
    lines.append(f"| soft stage only | 0 | {np.mean(soft):.2f} | | | | |")
    for name, model, screening, _ in curves(points):
        columns = {column: curve(points, model, screening, column) for column in METRICS}
        vs_teacher = soft_errors(points, model, screening)
        for k, (n, force, spread, stable) in enumerate(columns["force_rmse_mapped"]):
            cells = [_cell(force, spread, 2)]
            for column, digits in (("rdf_mad", 4), ("adf_jsd", 5)):
                rows = columns[column]
                cells.append(_cell(rows[k][1], rows[k][2], digits) if k < len(rows) else "")
            cells.append(f"{stable:.2f}")
            cells.append(vs_teacher.get(n, ""))
            lines.append(f"| {name} | {n} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _cell(mean: float, std: float, digits: int) -> str:
    """``mean`` (± ``std`` over seeds when there are several)."""
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std > 0 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", nargs="+", choices=sorted(SYSTEMS), default=sorted(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--work", type=Path, default=Path.cwd(), help="where cache/ and sweeps go")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "two_stage")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--screenings", nargs="+", default=["fps", "random"])
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", default="", help="suffix of the sweep and output directories")
    parser.add_argument("--plot-only", action="store_true", help="only redraw from the sweeps")
    args = parser.parse_args()
    for system in args.system:
        name = f"{system}-{args.tag}" if args.tag else system
        sweep = args.work / f"sweep-two-stage-{name}"
        if not args.plot_only:
            sweep = run_sweep(
                system,
                args.work,
                args.threads,
                args.seeds,
                args.fractions,
                args.screenings,
                args.set,
                name,
            )
        points = collect(sweep)
        out = args.output / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "curves.json").write_text(json.dumps(points, indent=1))
        plot(points, f"two-stage distillation: {name}", out / "curves")
        seeds, fractions = " ".join(map(str, args.seeds)), " ".join(map(str, args.fractions))
        command = (
            f"python benchmarks/hard_targets.py --system {system} --seeds {seeds} "
            f"--fractions {fractions} --screenings {' '.join(args.screenings)}"
            + (f" --set {' '.join(args.set)}" if args.set else "")
            + (f" --tag {args.tag}" if args.tag else "")
        )
        (out / "table.md").write_text(table(points, command, name))
        print((out / "table.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
