"""The student-baseline gap against one variable, mean ± std over seeds: the number of AA
training frames (``--vary frames``: where distillation pays off) or the length of the
students' training (``--vary epochs``: a better model, or the same model sooner).

    python benchmarks/gap_curve.py --system water --vary frames --values 25 50 100 200 400 all
    python benchmarks/gap_curve.py --system water --vary epochs --values 3 6 12 30

Every point is one ``cgkd run`` per seed on the system's long reference
(:data:`cgkd_runs.LONG_REFERENCES`, ``data_seed=0``) with the student and the baseline (the
student's network on mapped forces) and ``--steps`` of CG MD, in ``--work`` (the stage cache
shares what runs have in common: with ``--vary epochs`` the teachers are trained once;
``--vary frames`` takes ``all``, the default of every training frame, which shares its runs
with the 30-epoch point of ``--vary epochs``). Each
run's numbers are kept, with the commit, in ``<out>.json``; a later call adds its runs, and
``<out>.md`` (table) and ``<out>.png`` (each metric, and the gap, against the variable) are
rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import (
    LONG_REFERENCES,
    REPO,
    KeptRuns,
    Run,
    add_run_options,
    run_and_keep,
    run_directory,
)

from cgkd.results import metric
from cgkd.stages.base import Context
from cgkd.stages.data import reference_splits

#: --vary: (the override it sets, its axis label, the output's directory under docs/distillation).
VARIABLES = {
    "frames": ("train_frames", "AA training frames", "data_size"),
    "epochs": ("student.train.epochs", "student and baseline epochs", "training_length"),
}
#: The value of ``--vary frames`` for every training frame (``train_frames=null``, the default).
ALL = "all"
#: The compared metrics (lower is better for each), those every kept run has.
METRICS = ("rdf_mad", "adf_jsd", "tetrahedral_jsd", "force_rmse_mapped")
MODELS = ("student", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(LONG_REFERENCES), default="water")
    parser.add_argument("--vary", choices=sorted(VARIABLES), default="frames")
    parser.add_argument(
        "--values", nargs="+", required=True, help=f"integers; with --vary frames also {ALL}"
    )
    parser.add_argument("--steps", type=int, default=10_000, help="CG MD steps (50 ps at 5 fs)")
    parser.add_argument("--out", type=Path, help="default: docs/distillation/<curve>/SYSTEM")
    add_run_options(parser, "gap_curve", [0, 1, 2])
    args = parser.parse_args()
    key, axis, curve = VARIABLES[args.vary]
    for value in args.values:
        if not (value.isdigit() or (value == ALL and args.vary == "frames")):
            parser.error(f"--values {value}: use positive integers (and {ALL} with --vary frames)")
    out = args.out or REPO / "docs" / "distillation" / curve / args.system
    kept = KeptRuns(out.with_suffix(".json"), ("seed", "run"))
    runs = {
        value: Run((f"{key}={'null' if value == ALL else value}",), MODELS, args.steps)
        for value in args.values
    }
    run_and_keep(
        LONG_REFERENCES[args.system], runs, args.seeds, args.work, args.threads, args.set, kept
    )
    for entry in kept.entries:
        if entry["run"] == ALL and "train_frames" not in entry:
            run = run_directory(args.work, kept, ALL, entry["seed"])
            entry["train_frames"] = training_frame_count(run)
    kept.save()
    entries = kept.entries
    names: dict[int, str] = {}  # axis value -> its name in --values
    for entry in entries:
        first = names.setdefault(position(entry), entry["run"])
        if first != entry["run"]:
            sys.exit(
                f"{kept.path}: '{first}' and '{entry['run']}' both train on {position(entry)} "
                f"frames; drop one of them from that file and from --values"
            )
    values = sorted(names)
    labels = {value: f"{ALL} ({value})" for value, name in names.items() if name == ALL}
    shown = [name for name in METRICS if all(name in e["models"]["student"] for e in entries)]
    table = summarize(entries, values, shown)
    seeds = sorted({e["seed"] for e in entries})
    command = f"python benchmarks/gap_curve.py --system {args.system} --vary {args.vary}"
    command += f" --values {' '.join(names[v] for v in values)} --seeds {' '.join(map(str, seeds))}"
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
        n_seeds = sum(position(e) == value for e in entries)
        for model in (*MODELS, "gap"):
            cells = [
                f"{table[m][model][value][0]:.3g} ± {table[m][model][value][1]:.2g}" for m in shown
            ]
            label = labels.get(value, value)
            lines.append(f"| {label} | {model} | {n_seeds} | " + " | ".join(cells) + " |")
    lines += ["", f"![{axis}]({out.with_suffix('.png').name})", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(table, values, labels, shown, axis, out.with_suffix(".png"))
    print("\n".join(lines))


def training_frame_count(run: Path) -> int:
    """How many training frames the ``cgkd run`` in ``run`` used: its reference split's."""
    cfg = OmegaConf.load(run / "config.yaml")
    n_frames = json.loads((run / "metrics.json").read_text())["system"]["n_frames"]
    return len(reference_splits(Context.unchecked(cfg), n_frames).train)


def position(entry: dict) -> int:
    """Where a kept run sits on the curve's axis: its value; for ``all``, its frame count."""
    return entry["train_frames"] if entry["run"] == ALL else int(entry["run"])


def summarize(entries: list[dict], values: list[int], shown: list[str]) -> dict:
    """metric -> model (and "gap") -> value -> (mean, sample std) over the seeds."""
    table: dict = {name: {model: {} for model in (*MODELS, "gap")} for name in shown}
    for name in shown:
        for value in values:
            rows = [e["models"] for e in entries if position(e) == value]
            arrays = {model: np.array([row[model][name] for row in rows]) for model in MODELS}
            arrays["gap"] = arrays["baseline"] - arrays["student"]
            for model, array in arrays.items():
                spread = float(array.std(ddof=1)) if len(array) > 1 else 0.0
                table[name][model][value] = (float(array.mean()), spread)
    return table


def plot(
    table: dict, values: list[int], labels: dict[int, str], shown: list[str], axis: str, path: Path
) -> None:
    """One column per metric: student and baseline against the variable (error bars of one
    sample std; the structural deviations on a log scale) above, the gap below; ticks at the
    values, named by ``labels`` where given."""
    fig, axes = plt.subplots(2, len(shown), figsize=(4.2 * len(shown), 6.4), squeeze=False)
    for column, name in enumerate(shown):
        for model in MODELS:
            mean, spread = zip(*(table[name][model][v] for v in values), strict=True)
            axes[0, column].errorbar(values, mean, spread, marker="o", capsize=3, label=model)
        mean, spread = zip(*(table[name]["gap"][v] for v in values), strict=True)
        axes[1, column].errorbar(values, mean, spread, marker="o", capsize=3, color="k")
        axes[1, column].axhline(0.0, color="grey", lw=0.8)
        scale = "linear" if name == "force_rmse_mapped" else "log"  # forces span a few percent
        axes[0, column].set(title=metric(name).header, xscale="log", yscale=scale)
        axes[1, column].set(xlabel=axis, ylabel="baseline - student", xscale="log")
        for row in (0, 1):
            axes[row, column].set_xticks(values, [labels.get(v, str(v)) for v in values])
            axes[row, column].minorticks_off()
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


if __name__ == "__main__":
    main()
