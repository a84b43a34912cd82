"""Run an exported cgkd model in plain OpenMM: nothing from cgkd is imported.

usage: python examples/run_exported_model.py MODEL.ts START.pdb [steps]

MODEL.ts is a file that `cgkd distill` exported (``cache/student-*/student.ts``);
START.pdb holds the bead positions and box (``cache/simulate-student-*/replica_0/topology.pdb``).
Beads get the mass of one water molecule here; use your dataset's masses for other systems.
"""

import sys

# isort: off
# torch before openmm: OpenMM loads its plugins on import, and the openmmtorch plugin needs
# the libraries that torch loads (libtorch, CUDA runtime); imported later, TorchForce has no kernel.
import torch  # noqa: F401
import openmm
import openmm.app as app
import openmm.unit as unit
from openmmtorch import TorchForce

# isort: on


def main() -> None:
    model, start = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    pdb = app.PDBFile(start)
    system = openmm.System()
    for _ in range(pdb.topology.getNumAtoms()):
        system.addParticle(18.015 * unit.amu)
    system.setDefaultPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    force = TorchForce(model)
    force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
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


if __name__ == "__main__":
    main()
