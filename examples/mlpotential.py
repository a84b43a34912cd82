"""Run an exported cgkd model as an openmm-ml potential: nothing from cgkd is imported.

usage: python examples/mlpotential.py MODEL START.pdb [steps] [--kernels auto|fused|plain]

MODEL is a file that cgkd exported: ``cache/student-*/student.ts`` (its fused flavour
``student_fused.ts`` next to it runs instead on the CPU with ``--kernels auto``, the default)
or a classical model's ``classical.xml``. START.pdb holds the bead positions and box
(``cache/simulate-student-*/replica_0/topology.pdb``). Installing cgkd registers the
potential ``cgkd`` with openmm-ml, so one line builds the System. Beads have no element, so
they get the mass of one water molecule here (a classical .xml model carries its masses); use
your dataset's masses for other systems.
"""

import argparse

import openmm.app as app
from langevin_run import run  # examples/, this script's directory
from openmmml import MLPotential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("start")
    parser.add_argument("steps", nargs="?", type=int, default=1000)
    parser.add_argument("--kernels", default="auto", choices=("auto", "fused", "plain"))
    args = parser.parse_args()
    pdb = app.PDBFile(args.start)
    potential = MLPotential("cgkd", modelFile=args.model, kernels=args.kernels)
    masses = None if args.model.endswith(".xml") else 18.015  # amu per bead; .xml has its own
    system = potential.createSystem(pdb.topology, masses=masses)
    run(pdb, system, args.steps)


if __name__ == "__main__":
    main()
