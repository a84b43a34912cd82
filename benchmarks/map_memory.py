"""Peak memory of importing and mapping a trajectory larger than the chunks cgkd reads.

Writes a synthetic water-like GROMACS TRR (positions + forces, default 99,999 atoms x 2000
frames, about 4.8 GB) frame by frame, then runs, each in a fresh process, the two streaming
steps of the pipeline and reports their wall time and peak resident memory next to the size
of the data they processed:

    import   TRR -> H5MD (cgkd.io.trajectory.import_trajectory)
    map      H5MD -> CG H5MD, one bead per molecule (cgkd.mapping.molecule_com.map_trajectory)

    python benchmarks/map_memory.py [--atoms 99999] [--frames 2000] [--workdir DIR]

The files are deleted afterwards unless --keep is given; the work directory needs about twice
the TRR size of free disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

_STEP = r"""
import json, resource, sys, time
import cgkd  # torch, numpy, OpenMM plugins: the baseline every cgkd process pays
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from cgkd.io.trajectory import import_trajectory
from cgkd.mapping.molecule_com import map_trajectory
step, top, src, dst = sys.argv[1:5]
start = time.perf_counter()
if step == "import":
    particles = import_trajectory(top, src, dst, progress=False).n_atoms
else:
    particles = map_trajectory(top, src, dst).n_beads
print(json.dumps({
    "particles": particles,
    "seconds": time.perf_counter() - start,
    "baseline_mib": baseline / 1024,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def write_synthetic(workdir: Path, n_atoms: int, n_frames: int) -> tuple[Path, Path]:
    """A PDB topology of 3-atom molecules and a TRR with positions and forces, written frame by
    frame so that this step itself needs memory for one frame only."""
    import MDAnalysis as mda

    n_molecules = n_atoms // 3
    n_atoms = 3 * n_molecules
    universe = mda.Universe.empty(
        n_atoms,
        n_residues=n_molecules,
        atom_resindex=np.repeat(np.arange(n_molecules), 3),
        trajectory=True,
        forces=True,
    )
    universe.add_TopologyAttr("names", np.tile(["OW", "HW1", "HW2"], n_molecules))
    universe.add_TopologyAttr("types", np.tile(["O", "H", "H"], n_molecules))
    universe.add_TopologyAttr("resnames", ["SOL"] * n_molecules)
    universe.add_TopologyAttr("resids", np.arange(1, n_molecules + 1))
    universe.add_TopologyAttr("masses", np.tile([15.999, 1.008, 1.008], n_molecules))
    edge = 10.0 * (n_molecules / 33.4) ** (1 / 3)  # water density, Angstrom
    universe.dimensions = [edge, edge, edge, 90.0, 90.0, 90.0]
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, edge, (n_molecules, 1, 3))
    offsets = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    universe.atoms.positions = (centres + offsets).reshape(-1, 3)
    topology = workdir / "synthetic.pdb"
    with warnings.catch_warnings():  # MDAnalysis fills the PDB fields we leave out, noisily
        warnings.simplefilter("ignore", UserWarning)
        universe.atoms.write(topology)
    trajectory = workdir / "synthetic.trr"
    with mda.Writer(str(trajectory), n_atoms=n_atoms) as writer:
        for frame in range(n_frames):
            universe.trajectory.ts.time = 0.1 * frame
            universe.atoms.positions = (centres + offsets).reshape(-1, 3) + rng.normal(
                0, 0.05, (n_atoms, 3)
            ).astype(np.float32)
            universe.atoms.forces = rng.normal(0, 50.0, (n_atoms, 3)).astype(np.float32)
            writer.write(universe.atoms)
    return topology, trajectory


def run_step(step: str, topology: Path, source: Path, target: Path) -> dict[str, float]:
    """Run one streaming step in a fresh interpreter; its timing and peak memory."""
    result = subprocess.run(
        [sys.executable, "-c", _STEP, step, str(topology), str(source), str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{step} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=99_999)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cgkd-map-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        topology, trajectory = write_synthetic(workdir, args.atoms, args.frames)
        print(f"wrote {trajectory} in {time.perf_counter() - start:.0f} s")
        aa, cg = workdir / "aa.h5md", workdir / "cg.h5md"
        rows = [
            ("import TRR -> H5MD", trajectory, run_step("import", topology, trajectory, aa)),
            ("map H5MD -> CG H5MD", aa, run_step("map", topology, aa, cg)),
        ]
        n_atoms = 3 * (args.atoms // 3)
        if rows[1][2]["particles"] != n_atoms // 3:
            raise SystemExit(f"mapping gave {rows[1][2]['particles']} beads, not {n_atoms // 3}")
        print(f"\n{n_atoms} atoms x {args.frames} frames -> {n_atoms // 3} beads")
        print(
            f"{'step':<22}{'input GB':>10}{'time s':>9}{'baseline MiB':>14}"
            f"{'peak MiB':>10}{'peak - baseline':>17}{'input / peak':>14}"
        )
        for name, source, stats in rows:
            size = source.stat().st_size
            extra = stats["peak_mib"] - stats["baseline_mib"]
            print(
                f"{name:<22}{size / 1e9:>10.2f}{stats['seconds']:>9.0f}"
                f"{stats['baseline_mib']:>14.0f}{stats['peak_mib']:>10.0f}{extra:>17.0f}"
                f"{size / 2**20 / stats['peak_mib']:>14.1f}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
