"""The distillation table: every way of getting a CG model, mean +- std over seeds.

For each system (water, reline) one Hydra multirun of ``cgkd run`` over the student's loss
(single-teacher forces, ensemble forces, + per-bead energies, + total energy) and the seed;
every run also simulates the baseline, the classical force-matched pair potential, the single
teacher and the ensemble, which the stage cache trains and runs once per seed. ``cgkd
summarize`` then groups the runs' one-line results into the table
(``docs/distillation/<system>/summary.md``, ``.json``, ``.png``).

    python benchmarks/distillation_table.py --system water reline --seeds 0 1 2

The AA reference is generated once (``data_seed=0``); the seed changes the teachers, the
splits, the students and the CG MD. Run from a directory whose ``cache/`` may hold earlier
stages: anything already trained with the same settings is reused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cgkd_runs import run_cgkd  # noqa: E402  (benchmarks/, this script's directory)

from cgkd.summary import summarize, write_summary  # noqa: E402

#: The student rows: loss preset -> row name.
STUDENTS = {
    "single_teacher_forces": "student ← single teacher (forces)",
    "teacher_forces": "student ← ensemble (forces)",
    "teacher_forces_bead_energies": "student ← ensemble (forces + per-bead energies)",
    "distill": "student ← ensemble (forces + per-bead energies + total energy)",
}
#: Rows of the models that do not depend on the loss.
FIXED = {
    "baseline": "baseline (student network on mapped forces)",
    "classical": "classical pair potential (MS-CG splines on mapped forces)",
    "teacher": "single teacher, used directly",
    "ensemble": "teacher ensemble, used directly",
}
SYSTEMS = {
    "water": [],
    # The reline reference with 50 ps of NPT equilibration (the default is 100 ps).
    "reline": ["experiment=reline", "system.npt_equilibration=50.0"],
}
#: Settings of every run of the table: students trained 12 epochs, 15 ps of CG MD per model.
TABLE = [
    "data_seed=0",
    "student.train.epochs=12",
    "simulate.steps=3000",
    "simulate.report_interval=50",
    "simulate.models=[student,baseline,classical,teacher,ensemble]",
    "progress=false",
]


def settings(extra: list[str]) -> list[str]:
    """The table's overrides, those with a key in ``extra`` replaced by ``extra``'s."""
    keys = {item.split("=", 1)[0] for item in extra}
    return [item for item in TABLE if item.split("=", 1)[0] not in keys] + extra


def run_sweep(
    system: str,
    seeds: list[int],
    work: Path,
    threads: int,
    losses: list[str],
    extra: list[str],
    name: str,
) -> Path:
    """One multirun of ``cgkd run`` for ``system`` (with ``extra`` overrides); returns its
    sweep directory, ``work/sweep-<name>``."""
    sweep = work / f"sweep-{name}"
    args = [
        "run",
        "--multirun",
        *SYSTEMS[system],
        *settings(extra),
        f"simulate.threads={threads}",
        f"loss={','.join(losses)}",
        f"seed={','.join(map(str, seeds))}",
        f"hydra.sweep.dir={sweep}",
    ]
    run_cgkd(args, work, threads, f"{system}: sweep")
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", nargs="+", choices=sorted(SYSTEMS), default=sorted(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path.cwd(), help="where cache/ and sweeps go")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "distillation")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--losses", nargs="+", choices=list(STUDENTS), default=list(STUDENTS))
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra overrides for every run, e.g. student.model.n_features=32",
    )
    parser.add_argument("--tag", default="", help="suffix of the sweep and output directories")
    parser.add_argument(
        "--summarize-only", action="store_true", help="only rebuild the tables from the sweeps"
    )
    args = parser.parse_args()
    labels = {name: row for name, row in FIXED.items()}
    labels.update({f"student (loss={loss})": row for loss, row in STUDENTS.items()})
    options = [f"--seeds {' '.join(map(str, args.seeds))}"]
    if args.losses != list(STUDENTS):
        options.append(f"--losses {' '.join(args.losses)}")
    if args.set:
        options.append(f"--set {' '.join(args.set)}")
    if args.tag:
        options.append(f"--tag {args.tag}")
    for system in args.system:
        name = f"{system}-{args.tag}" if args.tag else system
        sweep = args.work / f"sweep-{name}"
        if not args.summarize_only:
            sweep = run_sweep(
                system, args.seeds, args.work, args.threads, args.losses, args.set, name
            )
        rows = summarize([sweep])
        command = f"python benchmarks/distillation_table.py --system {system} {' '.join(options)}"
        path = write_summary(
            rows,
            args.output / name,
            f"Distillation table: {name}",
            labels,
            notes=[
                f"Regenerate: `{command}`. Settings of every run: "
                f"`{' '.join(SYSTEMS[system] + settings(args.set))}` (teachers: the default "
                "ensemble of 4 HIP-NN-TS members, 30 epochs).",
            ],
        )
        print(path.read_text(), flush=True)


if __name__ == "__main__":
    main()
