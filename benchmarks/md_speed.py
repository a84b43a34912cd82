"""AA versus CG MD speed, every model side by side in one run on this machine.

usage: python benchmarks/md_speed.py [--teach cache/teach-X] [--student cache/student-X]
           [--classical cache/classical-X] [--sizes 300 1000 8000] [--steps 300] [--repeats 3]
           [--platform CPU] [--extra "NAME=cache/baseline-Y/baseline.pt" ...]

For each size N: AA is a TIP3P box of N waters (OpenMM, PME, rigid water, 2 fs), the default
system's settings; CG is one bead per water at the molecules' centres of mass after the AA
warm-up, at the default CG time step (MDSettings.timestep), Langevin dynamics. Models: the
classical force-matched pair potential (native OpenMM System, no torch), the student (student.pt
of the student stage), the ensemble's first member alone and the teacher ensemble
(ensemble.pt), and any ``--extra`` model checkpoints (e.g. a network of two interaction
layers), each exported for the N beads as plain TorchScript (forces by autograd) and as the
fused flavour (the compiled kernels of cgkd.ops); a model whose stage is not given is left
out. Every run is repeated ``--repeats`` times, all models in turn, so that a slow spell of a
shared machine hits them alike.

Prints, per size, the median ms/step (with the range over the repeats), ns/day and ns/day
relative to AA; then, given the teachers, the student and the classical model, the goal
ratios (student vs AA, vs the ensemble, vs the classical model; ms/step per 1000 beads
against size) and where one fused student force call spends its time (kernel by kernel,
medians over 50 calls on the 1000-bead frame).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# isort: off
from cgkd.simulation.md import MDSettings, run_cg_md  # before openmm (openmmtorch plugin)
import openmm.unit as unit
# isort: on

from cgkd.models.checkpoint import load_potential
from cgkd.models.potential import CGPotential
from cgkd.runtime import keep_freed_memory_in_heap
from cgkd.simulation.export import export_flavours
from cgkd.simulation.fused import FusedOpenMMPotential
from cgkd.simulation.native import export_native
from cgkd.systems.reference_md import prepare
from cgkd.systems.water import WaterBoxSpec
from cgkd.units import ns_per_day

WATER_MASS = 18.015  # amu
OUT = Path("/tmp/cgkd-md-speed")


def aa_box(molecules: int, steps: int) -> tuple[Callable[[], float], np.ndarray, np.ndarray]:
    """(a function timing ``steps`` AA steps in ms/step, CG start positions [N, 3] and box
    [3, 3] in nm) of a TIP3P box of ``molecules`` waters after a 100-step warm-up."""
    spec = WaterBoxSpec(n_molecules=molecules, equilibration=0.0, production=1.0)
    simulation, _ = prepare(spec)
    context, integrator = simulation.context, simulation.integrator
    integrator.step(100)
    state = context.getState(getPositions=True)
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).reshape(-1, 3, 3)
    masses = np.array([15.999, 1.008, 1.008])
    centres = np.einsum("mad,a->md", x, masses) / masses.sum()
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)

    def run() -> float:
        start = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        return 1000 * (time.perf_counter() - start) / steps

    return run, centres, np.asarray(box)


def model_files(args: argparse.Namespace, n_beads: int, box: np.ndarray) -> dict[str, Path]:
    """The run file of every model given for ``n_beads`` one-bead waters."""
    species = torch.zeros(n_beads, dtype=torch.long)
    out = OUT / f"models-{n_beads}"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if args.classical is not None:
        classical = load_potential(args.classical / "classical.pt", n_beads)[0].double()
        files["classical (native OpenMM)"] = export_native(
            classical, species, np.full(n_beads, WATER_MASS), box, out / "classical.xml"
        )
    potentials = {}  # name: (file stem, model)
    if args.student is not None:
        potentials["student"] = ("student", load_potential(args.student / "student.pt", n_beads)[0])
    if args.teach is not None:
        ensemble = load_potential(args.teach / "ensemble.pt", n_beads)[0]
        single = CGPotential([ensemble.networks[0]], ensemble.priors)
        potentials["teacher (single)"] = ("teacher", single)
        potentials[f"teacher ensemble ({len(ensemble.networks)})"] = ("ensemble", ensemble)
    for k, extra in enumerate(args.extra):
        name, checkpoint = extra.split("=", 1)
        potentials[name] = (f"extra_{k}", load_potential(Path(checkpoint), n_beads)[0])
    for name, (stem, potential) in potentials.items():
        exported = export_flavours(potential, species, out / f"{stem}.ts")
        if exported["fused"] is not None:
            files[f"{name}, fused"] = Path(exported["fused"])
        files[f"{name}, plain"] = Path(exported["plain"])
    return files


def cg_run(path: Path, x: np.ndarray, box: np.ndarray, settings: MDSettings) -> float:
    """ms/step of CG MD of the model at ``path`` from ``x`` (a fresh run every time)."""
    out = OUT / "run"
    shutil.rmtree(out, ignore_errors=True)  # a checkpoint there would resume, not rerun
    run = run_cg_md(path, x, box, np.full(len(x), WATER_MASS), settings, out, progress=False)
    if not run.stable:
        print(f"  {path.name}: {run.message}")
    return run.ms_per_step


def kernel_profile(student: Path, x: np.ndarray, box: np.ndarray) -> list[str]:
    """Where one fused student force call spends its time, ms (medians of 50 calls)."""
    potential = load_potential(student / "student.pt", len(x))[0]
    species = torch.zeros(len(x), dtype=torch.long)
    module = FusedOpenMMPotential(potential, species)
    positions = torch.as_tensor(x, dtype=torch.float32)
    b = torch.as_tensor(box, dtype=torch.float32)
    module.verlet.update(positions, b)
    net, verlet = module.networks[0], module.verlet
    sums = net.first(positions, b, verlet, species)
    grad_sums = net.energies(sums, species, True)[1]
    scripted = torch.jit.freeze(torch.jit.script(module).eval())
    x64, box64 = torch.as_tensor(x), torch.as_tensor(box)
    parts = {
        "pair sums (kernel)": lambda: net.first(positions, b, verlet, species),
        "dense layers and their gradient (kernel)": lambda: net.energies(sums, species, True),
        "forces from the pair-sum gradient (kernel)": lambda: net.first.gradient(
            grad_sums, positions, b, verlet, species
        ),
        "Verlet list rebuild (kernel; every few steps)": lambda: torch.ops.cgkd.half_pairs(
            positions, b, verlet.cutoff + verlet.used_skin
        ),
        "whole force call (TorchScript module, float64 in and out)": lambda: scripted(x64, box64),
    }
    lines = ["| part | ms |", "|---|---:|"]
    for name, call in parts.items():
        times = []
        for _ in range(55):
            start = time.perf_counter()
            call()
            times.append(1000 * (time.perf_counter() - start))
        lines.append(f"| {name} | {statistics.median(times[5:]):.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teach", type=Path, help="a finished teach stage")
    parser.add_argument("--student", type=Path, help="a finished student stage")
    parser.add_argument("--classical", type=Path, help="a classical stage")
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 8000])
    parser.add_argument("--steps", type=int, default=300, help="steps at 1000 beads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--platform", default="CPU", help="OpenMM platform of the CG runs")
    parser.add_argument(
        "--extra", nargs="*", default=[], metavar="NAME=CHECKPOINT", help="more models (.pt)"
    )
    args = parser.parse_args()
    keep_freed_memory_in_heap()
    OUT.mkdir(parents=True, exist_ok=True)
    timestep = MDSettings().timestep  # the default CG time step (ps)
    summary: dict[int, dict[str, float]] = {}
    for size in args.sizes:
        steps = max(50, round(args.steps * min(1.0, 1000 / size)))
        aa, x, box = aa_box(size, steps)
        files = model_files(args, len(x), box)
        settings = MDSettings(
            timestep=timestep, steps=steps, report_interval=steps, platform=args.platform
        )
        times: dict[str, list[float]] = {"AA": [], **{name: [] for name in files}}
        for _ in range(args.repeats):
            times["AA"].append(aa())
            for name, path in files.items():
                times[name].append(cg_run(path, x, box, settings))
        aa_ns = ns_per_day(0.002, statistics.median(times["AA"]) / 1000)
        print(
            f"\n{size} waters: AA {3 * size} atoms (TIP3P, PME, 2 fs), CG {size} beads "
            f"({timestep * 1000:g} fs), {steps} steps, {args.repeats} repeats; {args.platform}"
        )
        print("\n| model | ms/step (median) | range | ns/day | vs AA |")
        print("|---|---:|---:|---:|---:|")
        summary[size] = {}
        for name, values in times.items():
            ms = statistics.median(values)
            dt = 0.002 if name == "AA" else timestep
            ns = ns_per_day(dt, ms / 1000)
            summary[size][name] = ms
            print(
                f"| {name} | {ms:.2f} | {min(values):.2f}-{max(values):.2f} | {ns:.1f} "
                f"| {ns / aa_ns:.2f} |"
            )
    if None in (args.teach, args.student, args.classical):
        return  # the goals compare the student with the teachers and the classical model
    print("\n## Goal ratios (medians)\n")
    print(
        "| beads | student (fused) vs AA, ns/day | ensemble (fused) / student (fused), "
        "ms/step | ensemble (plain) / student (fused) | student (fused) / classical | student "
        "ms/step per 1000 beads |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for size, ms in summary.items():
        student = ms["student, fused"]
        ensemble = next(name for name in ms if name.startswith("teacher ensemble"))
        ensemble = ensemble.rsplit(",", 1)[0]
        vs_aa = (timestep / student) / (0.002 / ms["AA"])
        print(
            f"| {size} | {vs_aa:.2f} | {ms[ensemble + ', fused'] / student:.1f} "
            f"| {ms[ensemble + ', plain'] / student:.1f} "
            f"| {student / ms['classical (native OpenMM)']:.2f} | {1000 * student / size:.2f} |"
        )
    if 1000 in args.sizes:
        _, x, box = aa_box(1000, 1)
        print("\n## One fused student force call, 1000 beads\n")
        print("\n".join(kernel_profile(args.student, x, box)))


if __name__ == "__main__":
    main()
