"""AA versus CG MD speed, measured side by side in one run on this machine.

usage: python benchmarks/md_speed.py --teach cache/teach-XXXX --student cache/student-XXXX
           [--molecules 1000] [--steps 300] [--sizes 1000 8000] [--threads N]

AA: a TIP3P box of --molecules waters (OpenMM, PME, rigid water, 2 fs), the default
system's settings. CG: one bead per water at the molecules' centres of mass after the AA
warm-up; the teacher ensemble (ensemble.pt of the teach stage), its first member alone and
the student (student.pt of the student stage), each exported for this box and run as an
openmmtorch TorchForce with Langevin dynamics at the CG time step (conf/simulate). Prints:

* ms/step and ns/day of every MD, and its ns/day relative to AA;
* one force evaluation split into the neighbour search (cell list, then the Verlet list
  reuse that MD sees between rebuilds) and the network (forward + backward), eager;
* how the student's ms/step grows with the number of beads (boxes tiled from the first).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

# isort: off
from cgkd.simulation.md import MDSettings, run_cg_md  # before openmm (openmmtorch plugin)
import openmm.unit as unit
# isort: on

from model_scaling import median_ms  # benchmarks/ is on the path when run as a script

from cgkd.models.checkpoint import load_potential
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.potential import CGPotential
from cgkd.runtime import keep_freed_memory_in_heap
from cgkd.simulation.export import OpenMMPotential, export_torchscript
from cgkd.systems.reference_md import prepare
from cgkd.systems.water import WaterBoxSpec
from cgkd.units import ns_per_day

CONF = Path(__file__).resolve().parents[1] / "conf" / "simulate" / "langevin.yaml"
WATER_MASS = 18.015  # amu
OUT = Path("/tmp/cgkd-md-speed")


def aa_run(molecules: int, steps: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(ms/step of the AA box, CG start positions [N, 3] and box [3, 3] in nm)."""
    spec = WaterBoxSpec(n_molecules=molecules, equilibration=0.0, production=1.0)
    context, integrator, _ = prepare(spec)
    integrator.step(100)
    start = time.perf_counter()
    integrator.step(steps)
    state = context.getState(getPositions=True, getEnergy=True)
    ms = 1000 * (time.perf_counter() - start) / steps
    x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).reshape(-1, 3, 3)
    masses = np.array([15.999, 1.008, 1.008])
    centres = np.einsum("mad,a->md", x, masses) / masses.sum()
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    return ms, centres, np.asarray(box)


def tile(positions: np.ndarray, box: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The box repeated n times along each axis."""
    shifts = np.array([[i, j, k] for i in range(n) for j in range(n) for k in range(n)]) @ box
    return (positions[None] + shifts[:, None]).reshape(-1, 3), box * n


def split_cost(potential: CGPotential, x: np.ndarray, box: np.ndarray) -> tuple[float, ...]:
    """ms of the cell-list search, of the Verlet-list filter and of the network + priors
    (forward and backward with the pairs given), eager float32, for one frame."""
    positions = torch.as_tensor(x, dtype=torch.float32)
    b = torch.as_tensor(box, dtype=torch.float32)
    species = torch.zeros(len(x), dtype=torch.long)
    search = median_ms(lambda: neighbor_pairs(positions[None], b[None], potential.cutoff), 5, 15)
    module = OpenMMPotential(potential, species)
    module._pairs(positions, b)  # builds the list
    reuse = median_ms(lambda: module._pairs(positions, b), 5, 15)

    def network() -> None:
        p = positions.clone().requires_grad_(True)
        pairs = module._pairs(p, b)
        energy = potential(p[None], b[None], species, pairs).sum()
        torch.autograd.grad(energy, p)

    return search, reuse, max(median_ms(network, 5, 15) - reuse, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teach", type=Path, required=True, help="a finished teach stage")
    parser.add_argument("--student", type=Path, required=True, help="a finished student stage")
    parser.add_argument("--molecules", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    args = parser.parse_args()
    keep_freed_memory_in_heap()
    OUT.mkdir(parents=True, exist_ok=True)
    defaults = yaml.safe_load(CONF.read_text())
    timestep = float(defaults["timestep"])

    aa_ms, x, box = aa_run(args.molecules, args.steps)
    aa_ns = ns_per_day(args.steps * 0.002, aa_ms * args.steps / 1000)
    ensemble = load_potential(args.teach / "ensemble.pt", len(x))[0]
    student = load_potential(args.student / "student.pt", len(x))[0]
    single = CGPotential([ensemble.networks[0]], ensemble.priors)
    models = {
        f"teacher ensemble ({len(ensemble.networks)})": ensemble,
        "teacher (single)": single,
        "student": student,
    }
    settings = MDSettings(
        timestep=timestep, steps=args.steps, report_interval=args.steps, platform="CPU"
    )
    masses = np.full(len(x), WATER_MASS)
    species = torch.zeros(len(x), dtype=torch.long)
    print(
        f"AA: {args.molecules} TIP3P waters, PME, 2 fs; CG: {len(x)} beads, {timestep * 1000:g} fs"
    )
    print("\n| model | ms/step | ns/day | vs AA | search (ms) | list reuse (ms) | network (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| AA TIP3P, PME ({3 * args.molecules} atoms) | {aa_ms:.2f} | {aa_ns:.1f} | 1.00 | | | |"
    )
    student_ms = {}
    for name, potential in models.items():
        path = export_torchscript(potential, species, OUT / f"{name.split()[0]}-{len(x)}.ts")
        out = OUT / name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)  # a checkpoint there would resume, not rerun
        run = run_cg_md(path, x, box, masses, settings, out, progress=False)
        search, reuse, network = split_cost(potential, x, box)
        print(
            f"| CG {name} | {run.ms_per_step:.2f} | {run.ns_per_day:.1f} "
            f"| {run.ns_per_day / aa_ns:.2f} | {search:.2f} | {reuse:.2f} | {network:.2f} |"
            + ("" if run.stable else f" unstable: {run.message}")
        )
        student_ms[name] = run.ms_per_step
    ratio = student_ms[next(iter(models))] / student_ms["student"]
    print(f"\nstudent vs teacher ensemble: {ratio:.1f}x fewer ms/step")

    print("\n| beads | student ms/step | ns/day | ms/step per 1000 beads |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        n = round((size / len(x)) ** (1 / 3))
        xs, bs = tile(x, box, n)
        tiled = load_potential(args.student / "student.pt", len(xs))[0]
        path = export_torchscript(
            tiled, torch.zeros(len(xs), dtype=torch.long), OUT / f"student-{len(xs)}.ts"
        )
        short = MDSettings(**{**settings.__dict__, "steps": 100, "report_interval": 100})
        out = OUT / f"scale_{len(xs)}"
        shutil.rmtree(out, ignore_errors=True)
        masses = np.full(len(xs), WATER_MASS)
        run = run_cg_md(path, xs, bs, masses, short, out, progress=False)
        print(
            f"| {len(xs)} | {run.ms_per_step:.2f} | {run.ns_per_day:.1f} "
            f"| {1000 * run.ms_per_step / len(xs):.2f} |"
        )


if __name__ == "__main__":
    main()
