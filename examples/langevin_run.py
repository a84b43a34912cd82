"""The part both example scripts share: Langevin MD at 300 K (2 fs, 1/ps) of an OpenMM System
from a PDB's positions on the CPU platform, printing step, potential energy, temperature and
speed five times. Only OpenMM is imported here."""

import sys

import openmm
import openmm.app as app
import openmm.unit as unit


def run(pdb: app.PDBFile, system: openmm.System, steps: int) -> None:
    """Minimise, draw velocities at 300 K and run ``steps`` steps, reporting to stdout."""
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond
    )
    simulation = app.Simulation(
        pdb.topology, system, integrator, openmm.Platform.getPlatformByName("CPU")
    )
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=100)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.reporters.append(
        app.StateDataReporter(
            sys.stdout,
            max(steps // 5, 1),
            step=True,
            potentialEnergy=True,
            temperature=True,
            speed=True,
        )
    )
    simulation.step(steps)
