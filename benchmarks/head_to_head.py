"""Every denoising route head to head on one system's long AA reference, mean ± std over
seeds: plain force matching and the distilled student (each with the basic and, where the
map has more than one valid force map, the optimal force map), the classical force-matched
pair potential, and the teachers used directly.

    python benchmarks/head_to_head.py --system water --seeds 0 1 2 [--set KEY=VALUE ...]

Per seed, three ``cgkd run`` calls share one stage cache in ``--work``:

- ``default``: the default student and the baseline, with ``--long-steps`` of CG MD (1 ns);
- ``direct``: the classical model, the single teacher and the ensemble, ``--short-steps``;
- ``optimal``: ``mapping.force_map=optimal``, its student and baseline, ``--short-steps``
  (skipped where one bead is one rigid molecule: its basic map is the only valid one).

Each run's result line is kept, with the commit, in ``<out>/runs.json``; a later call adds
its seeds and the table (``summary.md``, ``.json``, ``.png``) is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import LONG_REFERENCES, REPO, KeptRuns, commit, run_cgkd
from omegaconf import OmegaConf

from cgkd.results import ModelResult
from cgkd.summary import SummaryRow, write_summary

#: Each run of a seed: its overrides and the models it simulates.
RUNS = {
    "default": ([], ["student", "baseline"]),
    "direct": ([], ["classical", "teacher", "ensemble"]),
    "optimal": (["mapping.force_map=optimal"], ["student", "baseline"]),
}
#: The runs of each system (water's one-bead rigid molecules have one valid force map).
SYSTEM_RUNS = {"water": ("default", "direct"), "reline": ("default", "direct", "optimal")}
#: Row labels by (run, model), in table order.
ROWS = {
    ("default", "baseline"): "force matching, basic map (the baseline)",
    ("optimal", "baseline"): "force matching, optimal force map",
    ("default", "student"): "student ← ensemble, basic map (the default)",
    ("optimal", "student"): "student ← ensemble trained on optimal-map forces",
    ("direct", "classical"): "classical pair potential (MS-CG splines)",
    ("direct", "teacher"): "single teacher, used directly",
    ("direct", "ensemble"): "teacher ensemble, used directly",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEM_RUNS), default="water")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), help="default: all the system's")
    parser.add_argument("--long-steps", type=int, default=200_000, help="1 ns at 5 fs")
    parser.add_argument("--short-steps", type=int, default=20_000, help="100 ps at 5 fs")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "head_to_head")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="default: docs/distillation/head_to_head/SYSTEM")
    args = parser.parse_args()
    out = args.out or REPO / "docs" / "distillation" / "head_to_head" / args.system
    runs = args.runs or list(SYSTEM_RUNS[args.system])
    kept = KeptRuns(out / "runs.json", ("seed", "run"))
    args.work.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for run in runs:
            extra, models = RUNS[run]
            steps = args.long_steps if run == "default" else args.short_steps
            directory = args.work / f"{args.system}_{run}_{seed}"
            settings = [
                *LONG_REFERENCES[args.system],
                *extra,
                f"seed={seed}",
                "data_seed=0",
                f"simulate.models=[{','.join(models)}]",
                f"simulate.steps={steps}",
                "simulate.report_interval=200",
                f"threads={args.threads}",
                "progress=false",
                *args.set,
                f"hydra.run.dir={directory}",
            ]
            run_cgkd(["run", *settings], args.work, args.threads, f"{run}, seed {seed}")
            line = json.loads((directory / "result.json").read_text())
            timestep = OmegaConf.load(directory / "config.yaml").simulate.timestep
            kept.keep(
                {"seed": seed, "run": run, "md_ps": steps * timestep, "commit": commit(), **line}
            )
            kept.save()
    write_table(kept.entries, args.system, out, args.set)


def write_table(entries: list[dict], system: str, out: Path, extra: list[str]) -> None:
    """The table and figure of every kept run, one row per (run, model)."""
    rows: dict[tuple[str, str], SummaryRow] = {}
    lengths: dict[tuple[str, str], set[float]] = {}
    for entry in sorted(entries, key=lambda e: e["seed"]):
        for model, values in entry["models"].items():
            key = (entry["run"], model)
            row = rows.setdefault(key, SummaryRow(ROWS[key], model))
            row.add(entry["seed"], ModelResult.from_json(values))
            lengths.setdefault(key, set()).add(round(entry["md_ps"], 3))
    ordered = [rows[key] for key in ROWS if key in rows]
    labels = {
        ROWS[key]: f"{ROWS[key]}, {'/'.join(f'{ps:g}' for ps in sorted(lengths[key]))} ps"
        for key in ROWS
        if key in rows
    }
    seeds = sorted({e["seed"] for e in entries})
    commits = sorted({e["commit"] for e in entries})
    command = f"python benchmarks/head_to_head.py --system {system}"
    command += f" --seeds {' '.join(map(str, seeds))}"
    command += f" --set {' '.join(extra)}" if extra else ""
    path = write_summary(
        ordered,
        out,
        f"Every denoising route head to head: {system}",
        labels,
        notes=[
            f"Regenerate: `{command}` (at {', '.join(commits)}). Reference: "
            f"`{' '.join(LONG_REFERENCES[system])}` with `data_seed=0`; every model trained "
            "with the default settings on all its training frames. CG MD length after each "
            "row's name (Langevin at the default friction of 1/ps). Each run's numbers: "
            "`runs.json`.",
        ],
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
