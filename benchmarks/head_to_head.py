"""Every denoising route head to head on one system's long AA reference, mean ± std over
seeds: plain force matching and the distilled student (each with the basic and, where the
map has more than one valid force map, the optimal force map), the classical force-matched
pair potential, and the teachers used directly.

    python benchmarks/head_to_head.py --system water --seeds 0 1 2 [--set KEY=VALUE ...]

Per seed, up to three ``cgkd run`` calls share one stage cache in ``--work``:

- ``default``: the default student and the baseline, with ``--long-steps`` of CG MD (1 ns);
- ``direct``: the classical model, the single teacher and the ensemble, ``--short-steps``;
- ``optimal``: ``mapping.force_map=optimal``, its student and baseline, ``--long-steps``
  (not on water, where one bead is one rigid molecule: its basic map is the only valid one).

Each run's result line is kept, with the commit, in ``<out>/runs.json``; a later call adds
its seeds and the table (``summary.md``, ``.json``, ``.png``) is rebuilt from all of them.
On reline every model's held-out force error is also measured against the optimal-map forces
of its test frames (cleaner labels of the same frames), once the optimal run has mapped them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import (
    LONG_REFERENCES,
    REPO,
    KeptRuns,
    Run,
    add_run_options,
    held_out_force_rmse,
    mean_row,
    run_and_keep,
    run_directory,
    write_table,
)

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

#: The cleanest labels of each system's frames, as overrides of a run's config (water has
#: one valid force map: its mapped forces are the cleanest there are).
CLEAN_LABELS = {"reline": ["mapping.force_map=optimal"]}


def clean_errors(system: str, work: Path, kept: KeptRuns) -> list[str]:
    """Measures, for each kept run not yet measured, its models' held-out force RMSE against
    the system's cleanest labels; returns the markdown table of them by row (mean ± std
    over seeds), none when the system has no cleaner labels or none are measured."""
    labels = CLEAN_LABELS.get(system)
    if labels is None:
        return []
    for entry in kept.entries:
        if "clean_force_rmse" not in entry:
            run = run_directory(work, kept, entry["run"], entry["seed"])
            try:
                errors = held_out_force_rmse(work, run, list(entry["models"]), labels)
            except FileNotFoundError as missing:  # the optimal map is not made yet
                print(f"no force errors against cleaner labels yet: {missing}")
                return []
            entry["clean_force_rmse"] = errors
    kept.save()
    lines = [
        "",
        f"## Held-out force RMSE against the cleanest labels (`{' '.join(labels)}`)",
        "",
        "The same test frames of each seed, their forces mapped with the optimal force map "
        "(lower noise); mean ± std over the seeds, kJ/mol/nm.",
        "",
        "| route | seeds | force RMSE |",
        "|---|---:|---:|",
    ]
    for (run, model), label in ROWS.items():
        values = [
            e["clean_force_rmse"][model]
            for e in kept.entries
            if e["run"] == run and model in e["clean_force_rmse"]
        ]
        if values:
            lines.append(mean_row(label, values, 1))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEM_RUNS), default="water")
    parser.add_argument("--runs", nargs="+", help="default: all the system's")
    parser.add_argument("--long-steps", type=int, default=200_000, help="1 ns at 5 fs")
    parser.add_argument("--short-steps", type=int, default=20_000, help="100 ps at 5 fs")
    parser.add_argument("--out", type=Path, help="default: docs/distillation/head_to_head/SYSTEM")
    add_run_options(parser, "head_to_head", [0, 1, 2])
    args = parser.parse_args()
    out = args.out or REPO / "docs" / "distillation" / "head_to_head" / args.system
    runs = {
        "default": Run((), ("student", "baseline"), args.long_steps),
        "direct": Run((), ("classical", "teacher", "ensemble"), args.short_steps),
        "optimal": Run(("mapping.force_map=optimal",), ("student", "baseline"), args.long_steps),
    }
    chosen = args.runs or SYSTEM_RUNS[args.system]
    kept = KeptRuns(out / "runs.json", ("seed", "run"))
    run_and_keep(
        LONG_REFERENCES[args.system],
        {name: runs[name] for name in chosen},
        args.seeds,
        args.work,
        args.threads,
        args.set,
        kept,
    )
    seeds = sorted({e["seed"] for e in kept.entries})
    command = f"python benchmarks/head_to_head.py --system {args.system}"
    command += f" --seeds {' '.join(map(str, seeds))}"
    command += f" --set {' '.join(args.set)}" if args.set else ""
    path = write_table(
        kept.entries,
        ROWS,
        out,
        f"Every denoising route head to head: {args.system}",
        f"Regenerate: `{command}`. Reference: `{' '.join(LONG_REFERENCES[args.system])}`, "
        "`data_seed=0`; every model trained with the default settings on all the training "
        "frames. The CG MD length follows each row's name (Langevin at the default 1/ps).",
    )
    if clean := clean_errors(args.system, args.work, kept):
        path.write_text(path.read_text() + "\n".join(clean) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
