"""The student's architecture chosen by measurement: CG MD cost against fidelity.

usage: python benchmarks/student_pareto.py [--seeds 0 1 2] [--variants default l1 ...]
           [--system water] [--work DIR] [--sweeps-only | --summarize-only]

For each variant of the student network (tensor order, sensitivities, features, atom layers,
cutoff; the rest as conf/model/hipnn_student.yaml) one Hydra multirun of ``cgkd run`` over
the seeds with the distillation table's settings (benchmarks/distillation_table.py: students
trained 12 epochs on the ensemble-mean forces, 15 ps of CG MD; the teachers of every variant
are the same cached ensemble per seed), so the default variant's row is the table's default
student. Then, in one quiet pass, each variant's CG MD cost: ms/step of its fused export on
1000 one-bead waters (benchmarks/md_speed.py's box), median of --repeats runs, the first
seed's model. Writes ``docs/speed/pareto/summary.md`` (the fidelity table with the cost
column), ``pareto.json`` and ``pareto.png``: RDF MAD, ADF JSD and tetrahedral-order JSD
against ms/step, mean +- std over the seeds, the Pareto front drawn.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cgkd_runs import run_cgkd  # noqa: E402  (benchmarks/, this script's directory)
from distillation_table import SYSTEMS, TABLE  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from md_speed import OUT, aa_box, cg_run  # noqa: E402

from cgkd.models.checkpoint import load_potential  # noqa: E402
from cgkd.results import metric  # noqa: E402
from cgkd.simulation.export import export_flavours  # noqa: E402
from cgkd.simulation.md import MDSettings  # noqa: E402
from cgkd.summary import SummaryRow, summarize, write_summary  # noqa: E402

#: Student variants: name -> overrides of student.model (the default first).
VARIANTS = {
    "default": [],
    "sensitivities 4": ["student.model.n_sensitivities=4"],
    "sensitivities 16": ["student.model.n_sensitivities=16"],
    "features 8": ["student.model.n_features=8"],
    "features 32": ["student.model.n_features=32"],
    "no atom layer": ["student.model.n_atom_layers=0"],
    "2 atom layers": ["student.model.n_atom_layers=2"],
    "order 1": ["student.model.tensor_order=1"],
    "order 0": ["student.model.tensor_order=0"],
    "cutoff 0.5": ["student.model.cutoff=0.5", "student.model.soft_max=0.5"],
}
#: Fidelity columns of the figure, by result field (labels: cgkd.results.METRICS).
FIDELITY = ("rdf_mad", "adf_jsd", "tetrahedral_jsd")


def sweep_dir(work: Path, system: str, variant: str) -> Path:
    return work / f"sweep-pareto-{system}-{variant.replace(' ', '_')}"


def run_variant(system: str, variant: str, seeds: list[int], work: Path, threads: int) -> None:
    """One multirun of ``cgkd run`` over ``seeds`` for one student variant."""
    args = [
        "run",
        "--multirun",
        *SYSTEMS[system],
        *[item for item in TABLE if not item.startswith("simulate.models")],
        "simulate.models=[student]",
        f"simulate.threads={threads}",
        *VARIANTS[variant],
        f"seed={','.join(map(str, seeds))}",
        f"hydra.sweep.dir={sweep_dir(work, system, variant)}",
    ]
    run_cgkd(args, work, threads, f"{system}, {variant}")


def variant_cost(sweep: Path, repeats: int, steps: int) -> list[float]:
    """ms/step of CG MD of a variant's fused student (its first run) on 1000 waters."""
    result = json.loads(sorted(sweep.glob("*/result.json"))[0].read_text())
    key = result["models"]["student"]["key"]
    student = next((sweep.parent / "cache").glob(f"student-{key}/student.pt"))
    timestep = MDSettings().timestep  # the default CG time step (ps)
    _, x, box = aa_box(1000, 1)
    potential = load_potential(student, len(x))[0]
    exported = export_flavours(potential, torch.zeros(len(x), dtype=torch.long), OUT / "pareto.ts")
    settings = MDSettings(timestep=timestep, steps=steps, report_interval=steps, platform="CPU")
    return [cg_run(Path(exported["fused"]), x, box, settings) for _ in range(repeats)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both cost and error (lower is better)."""
    return [
        i
        for i, (cost, error) in enumerate(points)
        if not any(c <= cost and e <= error and (c, e) != (cost, error) for c, e in points)
    ]


def plot(rows: dict[str, SummaryRow], costs: dict[str, list[float]], path: Path) -> Path:
    """Fidelity against cost, one panel per fidelity column, the Pareto front joined."""
    figure = Figure(figsize=(13, 4.2))
    axes = figure.subplots(1, len(FIDELITY))
    for ax, column in zip(axes, FIDELITY, strict=True):
        names = [name for name in rows if rows[name].mean_std(column) and name in costs]
        cost = [statistics.median(costs[name]) for name in names]
        mean = [rows[name].mean_std(column)[0] for name in names]
        std = [rows[name].mean_std(column)[1] for name in names]
        ax.errorbar(cost, mean, yerr=std, fmt="o", color="tab:blue", capsize=3)
        for name, c, m in zip(names, cost, mean, strict=True):
            ax.annotate(name, (c, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted(pareto_front(list(zip(cost, mean, strict=True))), key=lambda i: cost[i])
        ax.plot([cost[i] for i in front], [mean[i] for i in front], "-", color="tab:orange")
        ax.set_xlabel("CG MD ms/step, 1000 beads (fused export)")
        ax.set_ylabel(metric(column).header)
    figure.suptitle(
        "Student variants: cost against fidelity (mean ± std over seeds; line: Pareto front)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    figure.savefig(path.with_suffix(".svg"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="water")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=Path.cwd(), help="where cache/ and sweeps go")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "speed" / "pareto")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument(
        "--sweeps-only", action="store_true", help="train and simulate; time later, when quiet"
    )
    stage.add_argument("--summarize-only", action="store_true", help="time and summarize")
    args = parser.parse_args()
    if not args.summarize_only:
        for variant in args.variants:
            run_variant(args.system, variant, args.seeds, args.work, args.threads)
    if args.sweeps_only:
        return
    rows: dict[str, SummaryRow] = {}
    costs: dict[str, list[float]] = {}
    for variant in args.variants:
        sweep = sweep_dir(args.work, args.system, variant)
        student = [row for row in summarize([sweep]) if row.model == "student"]
        rows[variant] = student[0]
        rows[variant].label = variant
        costs[variant] = variant_cost(sweep, args.repeats, args.steps)
        print(f"{variant}: {statistics.median(costs[variant]):.2f} ms/step", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, costs, args.output / "pareto.png")
    (args.output / "pareto.json").write_text(
        json.dumps(
            {name: {**rows[name].to_dict(), "ms_per_step": costs[name]} for name in rows}, indent=2
        )
        + "\n"
    )
    command = f"python benchmarks/student_pareto.py --system {args.system} --seeds " + " ".join(
        map(str, args.seeds)
    )
    lines = [
        "| variant | overrides | CG MD ms/step, 1000 beads (median, range) |",
        "|---|---|---:|",
    ]
    for name in rows:
        values = costs[name]
        lines.append(
            f"| {name} | `{' '.join(VARIANTS[name]) or '(conf/model/hipnn_student.yaml)'}` "
            f"| {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |"
        )
    path = write_summary(
        list(rows.values()),
        args.output,
        f"Student variants on {args.system}: fidelity and cost",
        notes=[
            f"Regenerate: `{command}`. Settings of every run: "
            f"`{' '.join(SYSTEMS[args.system] + TABLE)}` with `simulate.models=[student]`.",
            "\n".join(lines),
            f"![pareto]({figure.name})",
        ],
    )
    print(path.read_text(), flush=True)


if __name__ == "__main__":
    main()
