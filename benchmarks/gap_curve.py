"""The student-baseline gap against one variable, mean ± std over seeds: the number of AA
training frames (``--vary frames``: where distillation pays off) or the length of the
students' training (``--vary epochs``: a better model, or the same model sooner).

    python benchmarks/gap_curve.py --system water --vary frames --values 25 50 100 200 400 800
    python benchmarks/gap_curve.py --system water --vary epochs --values 3 6 12 30

Every point is one ``cgkd run`` per seed on the system's long reference
(:data:`cgkd_runs.LONG_REFERENCES`, ``data_seed=0``) with the student and the baseline (the
student's network on mapped forces) and ``--steps`` of CG MD, in ``--work`` (the stage cache
shares what runs have in common: with ``--vary epochs`` the teachers are trained once). Each
run's numbers are kept, with the commit, in ``<out>.json``; a later call adds its runs, and
``<out>.md`` (table) and ``<out>.png`` (each metric, and the gap, against the variable) are
rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import LONG_REFERENCES, REPO, KeptRuns, Run, add_run_options, run_and_keep

from cgkd.results import metric

#: --vary: (the override it sets, its axis label, the output's directory under docs/distillation).
VARIABLES = {
    "frames": ("train_frames", "AA training frames", "data_size"),
    "epochs": ("student.train.epochs", "student and baseline epochs", "training_length"),
}
#: The compared metrics (lower is better for each), those every kept run has.
METRICS = ("rdf_mad", "adf_jsd", "tetrahedral_jsd", "force_rmse_mapped")
MODELS = ("student", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(LONG_REFERENCES), default="water")
    parser.add_argument("--vary", choices=sorted(VARIABLES), default="frames")
    parser.add_argument("--values", type=int, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=10_000, help="CG MD steps (50 ps at 5 fs)")
    parser.add_argument("--out", type=Path, help="default: docs/distillation/<curve>/SYSTEM")
    add_run_options(parser, "gap_curve", [0, 1, 2])
    args = parser.parse_args()
    key, axis, curve = VARIABLES[args.vary]
    out = args.out or REPO / "docs" / "distillation" / curve / args.system
    kept = KeptRuns(out.with_suffix(".json"), ("seed", "run"))
    runs = {str(value): Run((f"{key}={value}",), MODELS, args.steps) for value in args.values}
    run_and_keep(args.system, runs, args.seeds, args.work, args.threads, args.set, kept)
    entries = kept.entries
    values = sorted({int(e["run"]) for e in entries})
    shown = [name for name in METRICS if all(name in e["models"]["student"] for e in entries)]
    table = summarize(entries, values, shown)
    seeds = sorted({e["seed"] for e in entries})
    command = f"python benchmarks/gap_curve.py --system {args.system} --vary {args.vary}"
    command += f" --values {' '.join(map(str, values))} --seeds {' '.join(map(str, seeds))}"
    command += f" --set {' '.join(args.set)}" if args.set else ""
    commits = ", ".join(sorted({e["commit"] for e in entries}))
    lines = [
        f"# Student and baseline against {axis}: {args.system}",
        "",
        f"Regenerate: `{command}` (at {commits}). Reference: "
        f"`{' '.join(LONG_REFERENCES[args.system])}`, `data_seed=0`; {args.steps} steps of CG "
        "MD per model. Mean ± sample std over the seeds of each point; gap: baseline minus "
        "student, positive where the student is better. Each run's numbers: "
        f"`{out.with_suffix('.json').name}`.",
        "",
        f"| {axis} | model | seeds | " + " | ".join(metric(m).header for m in shown) + " |",
        "|---:|---|---:|" + "---:|" * len(shown),
    ]
    for value in values:
        n_seeds = sum(int(e["run"]) == value for e in entries)
        for model in (*MODELS, "gap"):
            cells = [
                f"{table[m][model][value][0]:.3g} ± {table[m][model][value][1]:.2g}" for m in shown
            ]
            lines.append(f"| {value} | {model} | {n_seeds} | " + " | ".join(cells) + " |")
    lines += ["", f"![{axis}]({out.with_suffix('.png').name})", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(table, values, shown, axis, out.with_suffix(".png"))
    print("\n".join(lines))


def summarize(entries: list[dict], values: list[int], shown: list[str]) -> dict:
    """metric -> model (and "gap") -> value -> (mean, sample std) over the seeds."""
    table: dict = {name: {model: {} for model in (*MODELS, "gap")} for name in shown}
    for name in shown:
        for value in values:
            rows = [e["models"] for e in entries if int(e["run"]) == value]
            arrays = {model: np.array([row[model][name] for row in rows]) for model in MODELS}
            arrays["gap"] = arrays["baseline"] - arrays["student"]
            for model, array in arrays.items():
                spread = float(array.std(ddof=1)) if len(array) > 1 else 0.0
                table[name][model][value] = (float(array.mean()), spread)
    return table


def plot(table: dict, values: list[int], shown: list[str], axis: str, path: Path) -> None:
    """One column per metric: student and baseline against the variable (error bars of one
    sample std) above, the gap below."""
    fig, axes = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 6.4), squeeze=False)
    for column, name in enumerate(shown):
        for model in MODELS:
            mean, spread = zip(*(table[name][model][v] for v in values), strict=True)
            axes[0, column].errorbar(values, mean, spread, marker="o", capsize=3, label=model)
        mean, spread = zip(*(table[name]["gap"][v] for v in values), strict=True)
        axes[1, column].errorbar(values, mean, spread, marker="o", capsize=3, color="k")
        axes[1, column].axhline(0.0, color="grey", lw=0.8)
        axes[0, column].set(title=metric(name).header, xscale="log")
        axes[1, column].set(xlabel=axis, ylabel="baseline - student", xscale="log")
        for row in (0, 1):
            axes[row, column].set_xticks(values, [str(v) for v in values])
            axes[row, column].minorticks_off()
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


if __name__ == "__main__":
    main()
