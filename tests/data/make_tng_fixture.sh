#!/usr/bin/env bash
# Regenerate the TNG-with-forces fixture: forces.tng, forces_topology.pdb, forces_reference.npz.
#
# Dev-time only (the tests read the stored files and never need gmx). Made with GROMACS 2022.5
# (Debian package "gromacs", 2022.5-Debian_2022.5_2, mixed precision) and MDAnalysis 2.11 + pytng.
#
# Nothing in Python writes TNG, and in GROMACS 2022.5 neither `gmx trjconv -o x.tng` (writes no
# forces, a zero velocity block instead, lossy compressed positions, then aborts with
# "double free") nor `gmx convert-trj -o x.tng` (segfaults without a .tpr; with one it loses the
# last frame and aborts) works. So: write 5 flexible SPC waters as a TRR with tests/formats.py,
# and let `gmx mdrun -rerun` recompute the forces and write them, with the positions and box, as
# a full-precision (uncompressed, float32) TNG via `-o forces.tng`. The same rerun with
# `-o out.trr` gives the reference values, read raw in GROMACS units (nm, kJ/mol/nm, ps).
#
# Steps are 0, 250, 500, 750 with dt = 0.002 ps (times 0, 0.5, 1.0, 1.5 ps): a stride above 1,
# because MDAnalysis's TNG reader counts one frame too many when the output stride is 1.
#
# Usage: tests/data/make_tng_fixture.sh   (from anywhere; PYTHON defaults to the repo's .venv)
set -euo pipefail

data=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$data/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# 1. Known positions and box (all atoms inside the box: mdrun -rerun writes wrapped positions).
PYTHONPATH=$repo "$python" - <<'EOF'
import numpy as np

from tests.formats import make_frames, write_topology_pdb, write_trr

frames = make_frames(n_frames=4, n_atoms=15, seed=7)
edges = frames.boxes[:, [0, 1, 2], [0, 1, 2]]
frames.positions = np.mod(frames.positions, edges[:, None, :])
write_trr("in.trr", frames, steps=250 * np.arange(frames.n_frames))
write_topology_pdb("forces_topology.pdb", frames)
np.save("in_positions.npy", frames.positions)
EOF

# 2. A flexible-SPC (OPLS-AA) run input whose dt matches the frame times.
cat > topol.top <<'EOF'
#include "oplsaa.ff/forcefield.itp"
#include "oplsaa.ff/spc.itp"

[ system ]
five flexible SPC waters

[ molecules ]
SOL 5
EOF
cat > rerun.mdp <<'EOF'
integrator    = md
dt            = 0.002
nsteps        = 750
define        = -DFLEXIBLE
constraints   = none
cutoff-scheme = Verlet
coulombtype   = reaction-field
rcoulomb      = 0.9
rvdw          = 0.9
pbc           = xyz
nstxout       = 250
nstvout       = 0
nstfout       = 250
nstenergy     = 250
nstcalcenergy = 250
EOF
gmx -quiet editconf -f forces_topology.pdb -o conf.gro > gmx.log 2>&1
# -maxwarn 1: the PDB's atom names (O, H1, H2) differ from spc.itp's (OW, HW1, HW2).
gmx -quiet grompp -f rerun.mdp -c conf.gro -p topol.top -o topol.tpr -maxwarn 1 >> gmx.log 2>&1
gmx -quiet mdrun -nt 1 -s topol.tpr -rerun in.trr -deffnm tng -o forces.tng >> gmx.log 2>&1
gmx -quiet mdrun -nt 1 -s topol.tpr -rerun in.trr -deffnm trr -o out.trr >> gmx.log 2>&1

# 3. Reference arrays from the rerun's TRR; check MDAnalysis reads the TNG back as them.
PYTHONPATH=$repo "$python" - <<'EOF'
import warnings

import MDAnalysis
import numpy as np
from MDAnalysis.lib.formats.libmdaxdr import TRRFile
from MDAnalysis.lib.mdamath import triclinic_vectors

with TRRFile("out.trr") as trr:  # raw GROMACS units, no MDAnalysis conversion
    raw = list(trr)
reference = {
    "positions": np.array([frame.x for frame in raw], dtype=np.float64),
    "forces": np.array([frame.f for frame in raw], dtype=np.float64),
    "boxes": np.array([frame.box for frame in raw], dtype=np.float64),
    "times": np.array([frame.time for frame in raw], dtype=np.float64),
    "steps": np.array([frame.step for frame in raw], dtype=np.int64),
}
np.testing.assert_allclose(reference["positions"], np.load("in_positions.npy"), atol=1e-6)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "Reader has no dt information": harmless for TNG
    universe = MDAnalysis.Universe("forces_topology.pdb", "forces.tng")
    read = [
        (ts.positions.copy(), ts.forces.copy(), triclinic_vectors(ts.dimensions), ts.time, ts.has_forces)
        for ts in universe.trajectory
    ]
assert type(universe.trajectory).__name__ == "TNGReader"
assert len(read) == len(raw) == universe.trajectory.n_frames == 4, (len(read), len(raw))
assert all(frame[4] for frame in read), "TNG has no forces"
np.testing.assert_allclose([f[0] * 0.1 for f in read], reference["positions"], rtol=0, atol=1e-6)
np.testing.assert_allclose([f[1] * 10.0 for f in read], reference["forces"], rtol=1e-6, atol=1e-4)
np.testing.assert_allclose([f[2] * 0.1 for f in read], reference["boxes"], rtol=0, atol=1e-6)
np.testing.assert_allclose([f[3] for f in read], reference["times"], rtol=0, atol=1e-9)
np.testing.assert_allclose(reference["times"], [0.0, 0.5, 1.0, 1.5], atol=1e-6)
np.savez("forces_reference.npz", **reference)
print("max |force| kJ/mol/nm:", np.abs(reference["forces"]).max())
EOF

cp forces.tng forces_topology.pdb forces_reference.npz "$data/"
ls -l "$data"/forces.tng "$data"/forces_topology.pdb "$data"/forces_reference.npz
