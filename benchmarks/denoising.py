"""Denoising with ground truth: teachers, ensemble and student against the clean forces.

A Lennard-Jones liquid (argon-like, 128 particles, T* = 1, rho* = 0.8) is simulated in
OpenMM; with the identity mapping its exact forces are known. The training labels are those
forces plus Gaussian noise of std ``noise`` x the RMS clean force per component. A teacher
ensemble (4 HIP-NN-TS) is trained on the noisy labels, two students (the small HIP-NN-TS) on
the ensemble's mean forces, alone and with its per-bead energies, and a baseline (the student
network) on the noisy labels. Every model is scored on held-out frames by its force RMSE
against the clean forces, relative to the RMS clean force. Two scans through one centre
point: noise level at fixed frames, and number of training frames at fixed noise.

    python benchmarks/denoising.py                  # about 25 min on 2 cores
    python benchmarks/denoising.py --quick          # a smoke run, about a minute

Writes ``docs/denoising/denoising.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from openmm import unit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cgkd.models.checkpoint import build_potential, merge_members  # noqa: E402
from cgkd.training.dataset import Splits, TrainingData  # noqa: E402
from cgkd.training.losses import LossWeights  # noqa: E402
from cgkd.training.targets import label_frames  # noqa: E402
from cgkd.training.trainer import TrainSettings, predict, train_potential  # noqa: E402
from cgkd.units import kt  # noqa: E402

SIGMA, EPSILON, MASS = 0.34, 0.998, 39.95  # nm, kJ/mol, amu (argon)
TEMPERATURE = 120.0  # K: T* = 1
DENSITY = 0.8  # reduced
N_PARTICLES = 128
LJ_CUTOFF = 0.85  # nm, 2.5 sigma
TEACHER = {"n_features": 32, "n_sensitivities": 16, "n_interactions": 1, "n_atom_layers": 2}
STUDENT = {"n_features": 16, "n_sensitivities": 8, "n_interactions": 1, "n_atom_layers": 1}
GEOMETRY = {"tensor_order": 2, "cutoff": 0.8, "soft_min": 0.28, "soft_max": 0.75, "n_species": 1}
N_TEST = 40
#: The students: ensemble-mean forces alone, and with the per-bead energies.
STUDENT_LOSSES = {
    "student (forces)": LossWeights(mapped_forces=0.0, teacher_forces=1.0),
    "student (forces + bead energies)": LossWeights(
        mapped_forces=0.0, teacher_forces=1.0, bead_energies=1.0
    ),
}


def lj_frames(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [T, N, 3] (nm), clean forces [T, N, 3] (kJ/mol/nm) and box [3, 3] (nm) of an
    LJ liquid, one frame every 0.5 ps after 20 ps of equilibration (Langevin, 10 fs)."""
    side = (N_PARTICLES / DENSITY) ** (1 / 3) * SIGMA
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * side))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(LJ_CUTOFF)
    for _ in range(N_PARTICLES):
        system.addParticle(MASS)
        force.addParticle(0.0, SIGMA, EPSILON)
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 2.0, 0.01)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    n_side = int(np.ceil(N_PARTICLES ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    context.setPositions(grid[:N_PARTICLES] * side / n_side)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(TEMPERATURE, seed + 1)
    integrator.step(2000)
    positions, forces = [], []
    for _ in range(n_frames):
        integrator.step(50)
        state = context.getState(getPositions=True, getForces=True, enforcePeriodicBox=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    return np.asarray(positions), np.asarray(forces), np.eye(3) * side


def force_error(model, data: TrainingData, frames: np.ndarray, clean: torch.Tensor) -> float:
    """RMSE (kJ/mol/nm) of the model's forces against the clean forces on ``frames``."""
    index = torch.as_tensor(frames)
    _, forces, _ = predict(model, data.positions[index], data.boxes[index], data.species)
    return float(torch.sqrt(torch.mean((forces.detach() - clean[index]) ** 2)))


def run_point(
    positions: np.ndarray,
    clean: np.ndarray,
    box: np.ndarray,
    n_train: int,
    noise: float,
    seed: int,
    epoch_budget: int,
    n_members: int,
) -> dict[str, float]:
    """Train teachers, student and baseline on ``n_train`` noisy frames; relative force
    errors against the clean forces on the last ``N_TEST`` frames."""
    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(np.mean(clean**2)))
    labels = clean + rng.normal(0.0, noise * scale, clean.shape)
    n_val = max(2, n_train // 10)
    splits = Splits(
        train=np.arange(n_train - n_val),
        val=np.arange(n_train - n_val, n_train),
        test=np.arange(len(positions) - N_TEST, len(positions)),
    )
    boxes = np.repeat(box[None], len(positions), 0)
    species = np.zeros(N_PARTICLES, dtype=np.int64)
    data = TrainingData(
        positions=torch.as_tensor(positions, dtype=torch.float32),
        boxes=torch.as_tensor(boxes, dtype=torch.float32),
        species=torch.as_tensor(species),
        mapped_forces=torch.as_tensor(labels, dtype=torch.float32),
    )
    clean_t = torch.as_tensor(clean, dtype=torch.float32)
    # About the same number of gradient steps at every training-set size.
    settings = TrainSettings(
        epochs=int(np.clip(epoch_budget / n_train, 8, 60)),
        learning_rate=3e-3,
        early_stopping=6,
        seed=seed,
    )
    teachers = []
    for k in range(n_members):
        teacher = build_potential([{**TEACHER, **GEOMETRY}], None, seeds=[seed + 1000 * (k + 1)])
        member_settings = TrainSettings(**{**settings.__dict__, "seed": seed + 1000 * (k + 1)})
        train_potential(teacher, data, splits, LossWeights(), member_settings, progress=False)
        teachers.append((teacher, [{**TEACHER, **GEOMETRY}]))
    ensemble, _ = merge_members(teachers)
    # Labels where the teachers were trained: the student sees no other frames.
    targets = label_frames(ensemble, positions, boxes, species, progress=False)
    distilled = data.with_targets(targets)
    students = {}
    for name, weights in STUDENT_LOSSES.items():
        students[name] = build_potential([{**STUDENT, **GEOMETRY}], None, seeds=[seed])
        train_potential(students[name], distilled, splits, weights, settings, progress=False)
    baseline = build_potential([{**STUDENT, **GEOMETRY}], None, seeds=[seed])
    train_potential(baseline, data, splits, LossWeights(), settings, progress=False)
    test = splits.test
    teacher_errors = [force_error(t, data, test, clean_t) for t, _ in teachers]
    label_error = float(np.sqrt(np.mean((labels[test] - clean[test]) ** 2)))
    return {
        "n_train": n_train,
        "noise": noise,
        "clean_force_rms": scale,
        "epochs": settings.epochs,
        "labels": label_error / scale,
        "teacher": float(np.mean(teacher_errors)) / scale,
        "teacher_std": float(np.std(teacher_errors)) / scale,
        "ensemble": force_error(ensemble, data, test, clean_t) / scale,
        "baseline": force_error(baseline, data, test, clean_t) / scale,
        **{
            name: force_error(student, distilled, test, clean_t) / scale
            for name, student in students.items()
        },
    }


MODELS = ("labels", "baseline", "teacher", "ensemble", *STUDENT_LOSSES)


def plot(points: list[dict[str, float]], centre: dict[str, float], path: Path) -> None:
    """Relative error vs noise (at the centre's frames) and vs frames (at its noise)."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, (varied, fixed) in zip(axes, (("noise", "n_train"), ("n_train", "noise")), strict=True):
        scan = sorted((p for p in points if p[fixed] == centre[fixed]), key=lambda p: p[varied])
        x = [p[varied] for p in scan]
        for model in MODELS:
            style = "k:" if model == "labels" else "o-"
            ax.plot(x, [p[model] for p in scan], style, label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{value:g}" for value in x])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("label noise / RMS clean force" if varied == "noise" else "training frames")
        ax.set_ylabel("force RMSE vs clean / RMS clean force")
        ax.set_title(
            f"{centre['n_train']:g} training frames"
            if fixed == "n_train"
            else f"noise {centre['noise']:g} x RMS clean force"
        )
        ax.legend(fontsize="small")
    figure.savefig(path, dpi=110)
    figure.savefig(path.with_suffix(".svg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", nargs="+", type=float, default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--frames", nargs="+", type=int, default=[25, 100, 400])
    parser.add_argument("--centre-noise", type=float, default=1.0)
    parser.add_argument("--centre-frames", type=int, default=100)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epoch-budget", type=int, default=3000, help="epochs x frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two tiny points, a smoke run")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "denoising")
    args = parser.parse_args()
    if args.quick:
        args.noise, args.frames, args.centre_frames, args.members = [2.0], [12], 12, 2
        args.epoch_budget = 100
    torch.manual_seed(args.seed)
    grid = {(n, args.centre_frames) for n in args.noise}
    grid |= {(args.centre_noise, f) for f in args.frames}
    started = time.perf_counter()
    positions, clean, box = lj_frames(max(f for _, f in grid) + N_TEST, args.seed)
    print(f"LJ liquid: {len(positions)} frames, box {box[0, 0]:.3f} nm, kT {kt(TEMPERATURE):.3f}")
    points = []
    for noise, n_train in sorted(grid, key=lambda p: (p[1], p[0])):
        point = run_point(
            positions, clean, box, n_train, noise, args.seed, args.epoch_budget, args.members
        )
        points.append(point)
        print(" ".join(f"{k} {v:.4g}" for k, v in point.items()), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    centre = {"noise": args.centre_noise, "n_train": args.centre_frames}
    plot(points, centre, args.output / "denoising.png")
    (args.output / "denoising.json").write_text(json.dumps(points, indent=2) + "\n")
    lines = [
        "# Denoising with ground truth (Lennard-Jones liquid, identity mapping)",
        "",
        f"Command: `python benchmarks/denoising.py` ({(time.perf_counter() - started) / 60:.0f}"
        " min). Force RMSE against the clean forces on 40 held-out frames, relative to the RMS"
        " clean force; `labels` is the noise itself; teacher: mean ± std over the members.",
        "",
        "| noise | frames | epochs | " + " | ".join(MODELS) + " |",
        "|---:" * (3 + len(MODELS)) + "|",
    ]
    for p in sorted(points, key=lambda p: (p["n_train"], p["noise"])):
        cells = [
            f"{p[m]:.3f} ± {p['teacher_std']:.3f}" if m == "teacher" else f"{p[m]:.3f}"
            for m in MODELS
        ]
        lines.append(
            f"| {p['noise']:g} | {p['n_train']} | {p['epochs']} | " + " | ".join(cells) + " |"
        )
    lines += ["", "![denoising](denoising.png)", ""]
    (args.output / "denoising.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
