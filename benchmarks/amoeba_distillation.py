"""All-atom distillation of AMOEBA water into a HIP-NN-TS student: speed and structure.

1. ``cgkd run experiment=amoeba_water``: AMOEBA water (an OpenMM System, mutual induced
   dipoles) is the teacher; the student learns it in two stages (soft targets from AMOEBA MD
   at 300-390 K, then screened reference frames) and runs AA MD through OpenMM-Torch.
2. Speed, side by side in this process: ms per MD step of AMOEBA and of the student, same
   frame, same integrator (Langevin middle, 0.5 fs), the two timed in alternating blocks.
3. Structure: O-O, O-H and H-H RDFs of the student's MD against AMOEBA's own MD (the
   reference trajectory is AMOEBA NVT MD at 300 K).

    python benchmarks/amoeba_distillation.py [--work DIR] [--threads 1]

Writes ``docs/amoeba/{amoeba.md,amoeba.json,rdf.png,rdf.svg}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# isort: off
from cgkd.simulation.engine import select_platform  # noqa: E402 (torch first)
from cgkd.simulation.system import build_system  # noqa: E402
import openmm  # noqa: E402
import openmm.unit as unit  # noqa: E402
# isort: on

from cgkd_runs import run_cgkd  # noqa: E402  (benchmarks/, this script's directory)
from omegaconf import OmegaConf  # noqa: E402

from cgkd.io.h5md import read_h5md  # noqa: E402
from cgkd.observables.compare import deviation  # noqa: E402
from cgkd.observables.sources import load_curves  # noqa: E402
from cgkd.stages import Pipeline  # noqa: E402
from cgkd.stages.teacher import load_teacher  # noqa: E402

PAIRS = ("O-O", "H-O", "H-H")


def run_pipeline(work: Path, threads: int, extra: list[str]) -> Path:
    """``cgkd run experiment=amoeba_water`` in ``work``; its output directory."""
    out = work / "amoeba-run"
    args = [
        "run",
        "experiment=amoeba_water",
        f"system.threads={threads}",
        f"simulate.threads={threads}",
        "progress=false",
        f"hydra.run.dir={out}",
        *extra,
    ]
    run_cgkd(args, work, threads, "the amoeba_water run")
    return out


def ms_per_step(
    systems: dict[str, openmm.System],
    positions: np.ndarray,
    box: np.ndarray,
    threads: int,
    steps: int,
    rounds: int,
) -> dict[str, float]:
    """Median over ``rounds`` of ms per Langevin step of each System, timed in turn."""
    platform, properties = select_platform("CPU", threads)
    contexts = {}
    for name, system in systems.items():
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 5e-4)
        context = openmm.Context(system, integrator, platform, properties)
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        context.setPositions(positions)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        integrator.step(10)  # warm-up (the TorchScript graph is optimised at its first call)
        contexts[name] = (context, integrator)
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, (_, integrator) in contexts.items():
            start = time.perf_counter()
            integrator.step(steps)
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.cwd(), help="where cache/ and runs go")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "amoeba")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the student's TorchScript runs in this process
    run = run_pipeline(args.work.resolve(), args.threads, args.set)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.cache_dir = str(args.work.resolve() / cfg.cache_dir)
    stages = Pipeline(cfg)
    teacher = load_teacher(stages.run("teacher"), stages.run("map"))  # the AMOEBA System
    frames = read_h5md(Path(metrics["artifacts"]["cg"]))
    student = Path(metrics["artifacts"]["student"])
    systems = {
        "AMOEBA (teacher)": teacher.system,
        "student": build_system(str(student), frames.masses, frames.boxes[-1]),
    }
    start = teacher.to_particles(frames.positions[-1:], frames.boxes[-1:])[0]  # whole molecules
    speed = ms_per_step(systems, start, frames.boxes[-1], args.threads, args.steps, args.rounds)
    speedup = speed["AMOEBA (teacher)"] / speed["student"]

    curves = load_curves(run / "observables.json")
    reference, mine = curves["AA (mapped)"], curves["student"]
    rdfs = {}
    for pair in PAIRS:
        name = next(n for n in reference if n.startswith("rdf") and n.endswith(pair))
        rdfs[pair] = {"name": name, "MAD": deviation(reference[name], mine[name])["MAD"]}
    stability = metrics["stability"]["student"]["stable_fraction"]
    result = {
        "ms_per_step": speed,
        "speedup": speedup,
        "threads": args.threads,
        "rdf_mad": rdfs,
        "student_stable_fraction": stability,
        "force_rmse": {
            "student": metrics["forces"]["student"]["force_rmse_mapped"],
            "baseline": metrics["forces"]["baseline"]["force_rmse_mapped"],
            "rms_force": metrics["forces"]["student"]["mapped_force_rms"],
        },
        "run": str(run),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "amoeba.json").write_text(json.dumps(result, indent=1))
    plot_rdfs(reference, mine, rdfs, args.output / "rdf")
    print(json.dumps(result, indent=1))


def plot_rdfs(reference: dict, student: dict, rdfs: dict, out: Path) -> None:
    """The three species-pair RDFs, AMOEBA MD against the student's MD."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.6), layout="constrained")
    for ax, (pair, facts) in zip(figure.subplots(1, 3), rdfs.items(), strict=True):
        for label, source, style in (("AMOEBA MD", reference, "-"), ("student MD", student, "--")):
            result = source[facts["name"]]
            ax.plot(result.x, result.y, style, label=label)
        ax.set_title(f"{pair} (MAD {facts['MAD']:.3f})")
        ax.set_xlabel("r (nm)")
        ax.set_ylabel("g(r)")
    figure.axes[0].legend()
    for suffix in (".png", ".svg"):
        figure.savefig(out.with_suffix(suffix), dpi=130)


if __name__ == "__main__":
    main()
