"""Where distillation pays off: the student and the baseline (the student's network on mapped
forces) against the number of AA training frames (``train_frames``), mean ± std over seeds,
as a table and a figure of each metric and of the baseline-minus-student gap.

    python benchmarks/data_size.py --system water --frames 25 50 100 200 400 800 --seeds 0 1 2

Every run is ``cgkd run train_frames=K seed=S data_seed=0`` on the system's long reference
(:data:`cgkd_runs.LONG_REFERENCES`) in ``--work`` (the stage cache shares what runs have in
common). Each run's numbers are kept, with the commit, in ``<out>.json``: a later call adds
its runs and ``<out>.md`` and ``<out>.png`` are rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import LONG_REFERENCES, REPO, KeptRuns, commit, run_cgkd

#: The compared result.json keys and their labels (lower is better for each).
METRICS = {
    "rdf_mad": "RDF MAD",
    "adf_jsd": "ADF JSD (bits)",
    "force_rmse_mapped": "force RMSE vs mapped (kJ/mol/nm)",
}
MODELS = ("student", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(LONG_REFERENCES), default="water")
    parser.add_argument("--frames", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "data_size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="default: docs/distillation/data_size/SYSTEM")
    args = parser.parse_args()
    out = args.out or REPO / "docs" / "distillation" / "data_size" / args.system
    kept = KeptRuns(out.with_suffix(".json"), ("frames", "seed"))
    args.work.mkdir(parents=True, exist_ok=True)
    for frames in args.frames:
        for seed in args.seeds:
            directory = args.work / f"{args.system}_frames{frames}_seed{seed}"
            settings = [*LONG_REFERENCES[args.system], f"train_frames={frames}", f"seed={seed}"]
            settings += ["data_seed=0", "progress=false", f"threads={args.threads}", *args.set]
            run_cgkd(
                ["run", *settings, f"hydra.run.dir={directory}"],
                args.work,
                args.threads,
                f"{frames} frames, seed {seed}",
            )
            result = json.loads((directory / "result.json").read_text())
            models = {model: result["models"][model] for model in MODELS}
            kept.keep({"frames": frames, "seed": seed, "commit": commit(), "models": models})
            kept.save()
    sizes = sorted({run["frames"] for run in kept.entries})
    table = summarize(kept.entries, sizes)
    seeds = sorted({run["seed"] for run in kept.entries})
    command = f"python benchmarks/data_size.py --system {args.system}"
    command += f" --frames {' '.join(map(str, sizes))} --seeds {' '.join(map(str, seeds))}"
    command += f" --set {' '.join(args.set)}" if args.set else ""
    commits = ", ".join(sorted({run["commit"] for run in kept.entries}))
    lines = [
        f"# Distillation against the amount of AA data: {args.system}",
        "",
        f"Regenerate: `{command}` (at {commits}; mean ± sample std over the seeds of each "
        "size; gap: baseline minus student, positive where the student is better).",
        "",
        "| training frames | model | seeds | " + " | ".join(METRICS.values()) + " |",
        "|---:|---|---:|" + "---:|" * len(METRICS),
    ]
    for frames in sizes:
        n_seeds = sum(run["frames"] == frames for run in kept.entries)
        for model in (*MODELS, "gap"):
            cells = [
                f"{table[key][model][frames][0]:.3g} ± {table[key][model][frames][1]:.2g}"
                for key in METRICS
            ]
            lines.append(f"| {frames} | {model} | {n_seeds} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(table, sizes, out.with_suffix(".png"))
    print("\n".join(lines))


def summarize(runs: list[dict], sizes: list[int]) -> dict:
    """metric -> model (and "gap") -> frames -> (mean, sample std) over the seeds."""
    table: dict = {key: {model: {} for model in (*MODELS, "gap")} for key in METRICS}
    for key in METRICS:
        for frames in sizes:
            rows = [run["models"] for run in runs if run["frames"] == frames]
            values = {model: np.array([row[model][key] for row in rows]) for model in MODELS}
            values["gap"] = values["baseline"] - values["student"]
            for model, array in values.items():
                spread = float(array.std(ddof=1)) if len(array) > 1 else 0.0
                table[key][model][frames] = (float(array.mean()), spread)
    return table


def plot(table: dict, sizes: list[int], path: Path) -> None:
    """One panel per metric: student and baseline against the frame count, error bars of one
    sample std; the gap in a second row."""
    fig, axes = plt.subplots(2, len(METRICS), figsize=(4.2 * len(METRICS), 6.4), squeeze=False)
    for column, (key, label) in enumerate(METRICS.items()):
        for model in MODELS:
            mean, spread = zip(*(table[key][model][k] for k in sizes), strict=True)
            axes[0, column].errorbar(sizes, mean, spread, marker="o", capsize=3, label=model)
        mean, spread = zip(*(table[key]["gap"][k] for k in sizes), strict=True)
        axes[1, column].errorbar(sizes, mean, spread, marker="o", capsize=3, color="k")
        axes[1, column].axhline(0.0, color="grey", lw=0.8)
        axes[0, column].set(title=label, xscale="log")
        axes[1, column].set(xlabel="AA training frames", ylabel="baseline - student", xscale="log")
        for row in (0, 1):
            axes[row, column].set_xticks(sizes, [str(k) for k in sizes])
            axes[row, column].minorticks_off()
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
