"""Run an exported cgkd model in plain OpenMM: nothing from cgkd is imported.

usage: python examples/run_exported_model.py MODEL.ts START.pdb [steps] [--kernels LIBRARY.so]

MODEL.ts is a file that `cgkd distill` exported: ``cache/student-*/student.ts`` (plain
TorchScript: its forward returns the energy, OpenMM takes the forces by autograd) or, with
``--kernels``, its fused flavour ``student_fused.ts``, several times faster on the CPU: its
forward returns (energy, forces), and it needs cgkd's compiled kernel library loaded first
(``python -m cgkd.ops`` prints that library's path). START.pdb holds the bead positions and box
(``cache/simulate-student-*/replica_0/topology.pdb``). Beads get the mass of one water
molecule here; use your dataset's masses for other systems.
"""

import argparse

# isort: off
# torch before openmm: OpenMM loads its plugins on import, and the openmmtorch plugin needs
# the libraries that torch loads (libtorch, CUDA runtime); imported later, TorchForce has no kernel.
import torch
import openmm
import openmm.app as app
import openmm.unit as unit
from openmmtorch import TorchForce
from langevin_run import run  # examples/, this script's directory

# isort: on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("start")
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    parser.add_argument("--kernels", help="cgkd's kernel library, for a fused model file")
    args = parser.parse_args()
    if args.kernels:
        torch.ops.load_library(args.kernels)  # before OpenMM reads the fused model
    pdb = app.PDBFile(args.start)
    system = openmm.System()
    for _ in range(pdb.topology.getNumAtoms()):
        system.addParticle(18.015 * unit.amu)
    system.setDefaultPeriodicBoxVectors(*pdb.topology.getPeriodicBoxVectors())
    force = TorchForce(args.model)
    force.setUsesPeriodicBoundaryConditions(True)
    force.setOutputsForces(bool(args.kernels))  # the fused flavour returns (energy, forces)
    system.addForce(force)
    run(pdb, system, args.steps)


if __name__ == "__main__":
    main()
