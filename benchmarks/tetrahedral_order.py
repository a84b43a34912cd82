"""What limits water's tetrahedral order in a one-bead model: the default student and
baseline against targeted variants (the student's capacity; the teachers used directly;
force matching with more interaction layers, a longer cutoff, longer training, ten times
the frames saved from the same AA run (also trained longer, with a more patient learning
rate, or split in blocks, or simulated at a shorter CG time step, or refined by relative
entropy) or a three times longer AA run; teachers and student of two interaction layers), on
the long water reference, over seeds; and, on the default pipeline's own 80 ps reference, its
student and baseline against the student refined by relative entropy (the default route) and
the baseline refined (also with twice the features or two interaction layers).

    python benchmarks/tetrahedral_order.py --seeds 0 [--variants NAME ...] [--set KEY=VALUE ...]

Every variant is one ``cgkd run`` per seed (one stage cache in ``--work``: the teachers are
trained once and shared by every student variant) with ``--steps`` of CG MD. The table's
"mean tetrahedral q - AA's" column is the shift of the mean q from the AA reference's; each
run's numbers are kept in ``<out>/runs.json`` and added to by later calls.
``<out>/force_error.png`` plots each model's shift against its held-out force error (the
same test frames within a seed): whether models nearer the mean force are nearer AA's order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

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
    write_table,
)

from cgkd.simulation.md import MDSettings

#: name -> (overrides, models simulated, row label of each model). A student learns its
#: teachers' forces, so what the teachers' force matching finds bounds it: the variants of
#: what force matching can find train the baseline (the student's network on mapped forces),
#: which needs no teachers.
#: the same 1 ns of water saved every 0.1 ps, the AA observables on every tenth frame
DENSE = ("system.save_interval=50", "analysis.reference_stride=10")

#: the default pipeline's own AA reference (80 ps of water, 400 frames every 0.2 ps), not the 1 ns
DEFAULT_DATA = ("system.production=80", "system.save_interval=100")
#: relative-entropy refinement of the baseline: the default 100 rounds of 2 walkers, or twice
#: the rounds and walkers
REFINE_BASELINE = ("refine.start=baseline",)
LONG_REFINE = (*REFINE_BASELINE, "refine.rounds=200", "refine.walkers=4")

VARIANTS = {
    "default": ((), {"student": "student (default)"}),
    "baseline": ((), {"baseline": "baseline (default)"}),
    "ensemble": ((), {"ensemble": "teacher ensemble, used directly"}),
    "student_teacher_size": (
        (
            "student.model.n_features=32",
            "student.model.n_sensitivities=16",
            "student.model.n_atom_layers=2",
        ),
        {"student": "student of the teachers' size (32 features, 2 atom layers)"},
    ),
    "baseline_two_interactions": (
        ("student.model.n_interactions=2",),
        {"baseline": "baseline with 2 interaction layers"},
    ),
    "two_interactions": (
        ("teacher.model.n_interactions=2", "student.model.n_interactions=2"),
        {"student": "student ← teachers, all of 2 interaction layers"},
    ),
    "baseline_cutoff_08": (
        ("student.model.cutoff=0.8", "student.model.soft_max=0.7"),
        {"baseline": "baseline, cutoff 0.8 nm"},
    ),
    "baseline_rmse": (
        ("student.train.error=rmse",),
        {"baseline": "baseline on the RMSE alone (no MAE term)"},
    ),
    "baseline_frames_200": (("train_frames=200",), {"baseline": "baseline on 200 frames"}),
    "baseline_frames_400": (("train_frames=400",), {"baseline": "baseline on 400 frames"}),
    "baseline_dense_frames": (
        DENSE,
        {"baseline": "baseline on 10x the frames (every 0.1 ps of the same 1 ns)"},
    ),
    "baseline_dense_frames_4000": (
        (*DENSE, "train_frames=4000"),
        {"baseline": "baseline on 5x the frames (4000 of those every 0.1 ps of the same 1 ns)"},
    ),
    "baseline_dense_frames_blocks": (
        (*DENSE, "teacher.train.split_block=50"),
        {"baseline": "baseline on those frames every 0.1 ps, split in 5 ps blocks"},
    ),
    "baseline_dense_frames_epochs_60": (
        (
            *DENSE,
            "student.train.epochs=60",
            "student.train.early_stopping=12",
        ),
        {"baseline": "baseline on those frames every 0.1 ps, trained up to 60 epochs"},
    ),
    "baseline_dense_frames_patient": (
        (
            *DENSE,
            "student.train.epochs=60",
            "student.train.early_stopping=12",
            "student.train.lr_patience=6",
        ),
        {
            "baseline": "baseline on those frames every 0.1 ps, 60 epochs, "
            "learning rate halved after 6 flat epochs (not 2)"
        },
    ),
    "baseline_dense_frames_patient_90": (
        (
            *DENSE,
            "student.train.epochs=90",
            "student.train.early_stopping=12",
            "student.train.lr_patience=6",
        ),
        {"baseline": "the same, trained up to 90 epochs"},
    ),
    "baseline_dense_frames_two_interactions": (
        (*DENSE, "student.model.n_interactions=2"),
        {"baseline": "baseline with 2 interaction layers on those frames every 0.1 ps"},
    ),
    "refined_dense_frames": (
        (*DENSE, *LONG_REFINE),
        {
            "refined": "baseline on those frames every 0.1 ps, refined by relative entropy "
            "(200 rounds of 4 walkers)"
        },
    ),
    "refined_dense_frames_two_interactions": (
        (*DENSE, "student.model.n_interactions=2", *REFINE_BASELINE),
        {
            "refined": "baseline with 2 interaction layers on those frames every 0.1 ps, refined "
            "by relative entropy (100 rounds of 2 walkers)"
        },
    ),
    "default_data": (
        DEFAULT_DATA,
        {
            "student": "student on the default 80 ps reference (400 frames)",
            "baseline": "baseline on the default 80 ps reference",
        },
    ),
    "refined_student_default_data": (
        DEFAULT_DATA,
        {"refined": "student on the default 80 ps reference, refined (the default route)"},
    ),
    "refined_student_default_data_200": (
        (*DEFAULT_DATA, "refine.rounds=200"),
        {"refined": "student on the default 80 ps reference, refined for 200 rounds (not 100)"},
    ),
    "refined_baseline_default_data": (
        (*DEFAULT_DATA, *REFINE_BASELINE),
        {"refined": "baseline on the default 80 ps reference, refined"},
    ),
    "refined_baseline_two_interactions_default_data": (
        (*DEFAULT_DATA, "student.model.n_interactions=2", *REFINE_BASELINE),
        {"refined": "baseline with 2 interaction layers on the default 80 ps reference, refined"},
    ),
    "refined_baseline_32_features_default_data": (
        (*DEFAULT_DATA, "student.model.n_features=32", *REFINE_BASELINE),
        {"refined": "baseline of 32 features on the default 80 ps reference, refined"},
    ),
    "baseline_long_frames": (
        ("system.production=3000", "system.save_interval=250", "analysis.reference_stride=5"),
        {"baseline": "baseline on frames every 0.5 ps of a 3 ns run (6x the frames, 3x the time)"},
    ),
    "baseline_epochs_60": (
        ("student.train.epochs=60", "student.train.early_stopping=12"),
        {"baseline": "baseline trained up to 60 epochs"},
    ),
    # the default time step, named so that the 2 and 1 fs runs of the same model (one stage
    # cache) have their 5 fs run beside them in the table
    "baseline_dense_frames_md_5fs": (
        (*DENSE, "simulate.timestep=0.005"),
        {"baseline": "baseline on those frames every 0.1 ps, CG MD at 5 fs (the default)"},
    ),
    "baseline_dense_frames_md_2fs": (
        (*DENSE, "simulate.timestep=0.002"),
        {"baseline": "baseline on those frames every 0.1 ps, CG MD at 2 fs (not 5)"},
    ),
    "baseline_dense_frames_md_1fs": (
        (*DENSE, "simulate.timestep=0.001"),
        {"baseline": "baseline on those frames every 0.1 ps, CG MD at 1 fs (not 5)"},
    ),
}


def md_steps(overrides: tuple[str, ...], steps: int) -> int:
    """``steps`` of CG MD at the default time step, rescaled to a variant's own
    ``simulate.timestep`` so that every variant simulates the same picoseconds."""
    timestep = MDSettings.timestep
    for override in overrides:
        if override.startswith("simulate.timestep="):
            timestep = float(override.split("=", 1)[1])
    return round(steps * MDSettings.timestep / timestep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--steps",
        type=int,
        default=20_000,
        help="CG MD steps at the default 5 fs (100 ps; rescaled to the time step of a variant "
        "that sets its own)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "distillation" / "tetrahedral")
    add_run_options(parser, "tetrahedral", [0])
    args = parser.parse_args()
    kept = KeptRuns(args.out / "runs.json", ("seed", "run"))
    runs = {}
    for name in args.variants:
        overrides, rows = VARIANTS[name]
        runs[name] = Run(overrides, tuple(rows), md_steps(overrides, args.steps))
    run_and_keep(
        LONG_REFERENCES["water"], runs, args.seeds, args.work, args.threads, args.set, kept
    )
    for entry in kept.entries:  # the AA reference's mean q, kept once per run
        if "aa_mean_q" not in entry:
            metrics = run_directory(args.work, kept, entry["run"], entry["seed"]) / "metrics.json"
            scalars = json.loads(metrics.read_text())["scalars"]
            entry["aa_mean_q"] = scalars["mean tetrahedral q"]["AA (mapped)"]["value"]
    kept.save()
    labels = {
        (name, model): label
        for name, (_, rows) in VARIANTS.items()
        for model, label in rows.items()
    }
    seeds = sorted({e["seed"] for e in kept.entries})
    aa_q = sorted({round(e["aa_mean_q"], 4) for e in kept.entries})
    command = f"python benchmarks/tetrahedral_order.py --seeds {' '.join(map(str, seeds))}"
    command += f" --set {' '.join(args.set)}" if args.set else ""
    path = write_table(
        kept.entries,
        labels,
        args.out,
        "Water's tetrahedral order: what limits a one-bead model",
        f"Regenerate: `{command}`. Reference: `{' '.join(LONG_REFERENCES['water'])}`, "
        f"`data_seed=0`; AA's mean tetrahedral q: {', '.join(map(str, aa_q))}. Every variant "
        "differs from the default settings only as its name says.",
    )
    figure = plot_shift_against_force_error(kept.entries, labels, args.out / "force_error.png")
    path.write_text(path.read_text() + f"\n![shift against force error]({figure.name})\n")
    print(path.read_text())


def plot_shift_against_force_error(
    entries: list[dict], labels: dict[tuple[str, str], str], path: Path
) -> Path:
    """Each model's mean tetrahedral q shift from AA's against its held-out force RMSE
    (kJ/mol/nm), one panel per seed (each seed has its own test frames); saves ``path``."""
    seeds = sorted({e["seed"] for e in entries})
    fig, axes = plt.subplots(
        1, len(seeds), figsize=(4.5 * len(seeds), 6.5), squeeze=False, layout="constrained"
    )
    styles = {label: (f"C{k % 10}", "os^Dv"[k // 10]) for k, label in enumerate(labels.values())}
    for ax, seed in zip(axes[0], seeds, strict=True):
        for entry in (e for e in entries if e["seed"] == seed):
            for model, values in entry["models"].items():
                label = labels.get((entry["run"], model))
                if label is None:
                    continue
                color, marker = styles[label]
                x, y = values["force_rmse_mapped"], values["tetrahedral_shift"]
                ax.plot(x, y, marker, color=color, label=label, ms=7)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set(
            title=f"seed {seed}",
            xlabel="held-out force RMSE vs mapped (kJ/mol/nm)",
            ylabel="mean tetrahedral q - AA's",
        )
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()[:-1]}
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="outside lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
