"""Time to compute every default observable on 1000 beads x 1000 frames (goal: under a minute
on 2 cores), streamed from a DCD file as the pipeline reads CG runs.

usage: python benchmarks/observables_speed.py [--beads 1000] [--frames 1000] [--threads 2]

The trajectory is a Lennard-Jones fluid at the density of water beads (33.4 nm^-3,
sigma 0.3 nm, epsilon 2.5 kJ/mol, 300 K), run with OpenMM (Langevin, 5 fs, a frame every
100 steps) and written to a temporary DCD: liquid structure, so neighbour counts are those
of a real CG run. Prints the seconds per observable (each run on its own, as
``cgkd.observables.suite.evaluate`` runs them), the total and the frames per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
from omegaconf import OmegaConf
from openmm import app, unit

from cgkd.observables.rdf import coordination_number
from cgkd.observables.structure import structure_factor
from cgkd.observables.suite import build_observables, build_rdfs, first_shell, resolve_auto
from cgkd.observables.trajectory import Trajectory

CONFIG = Path(__file__).resolve().parent.parent / "conf" / "analysis" / "default.yaml"
DENSITY = 33.4  # beads per nm^3, water at 300 K


def lj_fluid_dcd(n_beads: int, n_frames: int, threads: int, directory: Path) -> tuple[Path, Path]:
    """A DCD of a Lennard-Jones fluid and its PDB topology; returns (dcd, pdb) paths."""
    length = (n_beads / DENSITY) ** (1.0 / 3.0)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * length))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(0.9)
    force.setUseDispersionCorrection(False)
    for _ in range(n_beads):
        system.addParticle(18.0)
        force.addParticle(0.0, 0.3, 2.5)
    system.addForce(force)
    topology = app.Topology()
    residue_chain = topology.addChain()
    for _ in range(n_beads):
        residue = topology.addResidue("W", residue_chain)
        topology.addAtom("W", app.element.oxygen, residue)
    topology.setPeriodicBoxVectors(np.eye(3) * length * unit.nanometer)
    grid = int(np.ceil(n_beads ** (1.0 / 3.0)))
    points = np.stack(np.meshgrid(*[np.arange(grid)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (points[:n_beads] + 0.5) * length / grid
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.005)
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName("CPU")
    simulation = app.Simulation(topology, system, integrator, platform, {"Threads": str(threads)})
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(300.0, 1)
    simulation.step(2000)
    dcd, pdb = directory / "fluid.dcd", directory / "fluid.pdb"
    state = simulation.context.getState(getPositions=True)
    with open(pdb, "w") as handle:
        app.PDBFile.writeFile(topology, state.getPositions(), handle)
    simulation.reporters.append(app.DCDReporter(str(dcd), 100))
    simulation.step(100 * n_frames)
    return dcd, pdb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="OpenMM threads for the fluid")
    args = parser.parse_args()
    settings = OmegaConf.to_container(OmegaConf.load(CONFIG), resolve=True)
    settings["tetrahedral"]["enabled"] = True  # timed too, though auto leaves it off for LJ
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dcd, pdb = lj_fluid_dcd(args.beads, args.frames, args.threads, Path(tmp))
        print(
            f"LJ fluid: {args.beads} beads x {args.frames} frames made in "
            f"{time.perf_counter() - start:.0f} s\n"
        )
        trajectory = Trajectory.from_dcd(dcd, pdb)
        print("| observable | seconds | ms per frame |")
        print("|---|---:|---:|")
        total = 0.0
        results = {}

        def timed(observables: dict) -> None:
            nonlocal total
            for name, observable in observables.items():
                start = time.perf_counter()
                results[name] = observable.run(trajectory, n_blocks=settings["n_blocks"])
                seconds = time.perf_counter() - start
                total += seconds
                print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.frames:.2f} |")

        timed(build_rdfs(settings, trajectory))
        # `auto` settings from the fluid's own first shell, as the reference resolves them.
        resolved, _, _ = resolve_auto(settings, first_shell(results, n_species=1))
        timed(build_observables(resolved, trajectory)[0])
        start = time.perf_counter()
        coordination_number(results["rdf"])
        sq = settings["structure_factor"]
        q = np.linspace(2.0 * np.pi / settings["rdf"]["r_max"], sq["q_max"], sq["n_q"])
        structure_factor(results["rdf"], q)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"| n(r), S(q) from the RDF | {seconds:.3f} | |")
        print(f"| **total** | **{total:.1f}** | {1000 * total / args.frames:.1f} |")
        print(
            f"\n{args.frames / total:.1f} frames/s; goal: under 60 s "
            f"({'met' if total < 60 else 'missed'})"
        )
        if "msd" in results:
            print(f"LJ fluid D = {results['msd'].attrs['D']:.4g} nm^2/ps")


if __name__ == "__main__":
    main()
