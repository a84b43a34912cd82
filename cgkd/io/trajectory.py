"""Load any MDAnalysis-readable topology + trajectory with forces into :class:`Frames`.

MDAnalysis works in Angstrom, ps and kJ/(mol Angstrom); this module converts to cgkd's nm and
kJ/(mol nm) at the edge. Species are the residue names (``type_names`` = sorted unique names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.exceptions import NoDataError
from MDAnalysis.lib.mdamath import triclinic_vectors

from cgkd.io.frames import Frames
from cgkd.units import ANGSTROM_PER_NM, NM_PER_ANGSTROM

_NO_FORCES_FIX = (
    "write forces (e.g. OpenMM State getForces / GROMACS -f) or choose a format that stores them"
)


_H5MD_SUFFIXES = (".h5", ".hdf5", ".h5md")


class TrajectoryError(ValueError):
    """A topology/trajectory pair cannot be turned into frames with forces."""


def load_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    *,
    start: int | None = None,
    stop: int | None = None,
    step: int | None = None,
) -> tuple[Universe, Frames]:
    """Read frames ``start:stop:step`` of ``trajectory`` with forces, in nm, kJ/mol/nm, ps, amu.

    Returns the MDAnalysis universe (for topology: residues, bonds, names) and the frames.
    Every frame must carry forces and a periodic box.
    """
    top, traj = Path(topology), Path(trajectory)
    for path, kind in ((top, "topology"), (traj, "trajectory")):
        if not path.is_file():
            raise TrajectoryError(f"{kind} file {path} does not exist; check the path")
    universe = _open_universe(top, traj)
    atoms = universe.atoms
    try:
        masses = np.asarray(atoms.masses, dtype=np.float64)
    except NoDataError:
        raise TrajectoryError(
            f"topology {top} has no masses and none could be guessed; use a topology with masses"
        ) from None
    type_names = sorted(set(atoms.resnames))
    types = np.searchsorted(type_names, atoms.resnames)

    sliced = universe.trajectory[start:stop:step]
    n_frames = len(sliced)
    if n_frames == 0:
        raise TrajectoryError(
            f"trajectory {traj} has no frames in start={start} stop={stop} step={step} "
            f"(it has {universe.trajectory.n_frames}); widen the frame range"
        )
    n_atoms = atoms.n_atoms
    positions = np.empty((n_frames, n_atoms, 3))
    forces = np.empty((n_frames, n_atoms, 3))
    boxes = np.empty((n_frames, 3, 3))
    times = np.empty(n_frames)
    for i, ts in enumerate(sliced):
        if not ts.has_forces:
            raise TrajectoryError(f"trajectory {traj} has no forces; {_NO_FORCES_FIX}")
        if ts.dimensions is None:
            raise TrajectoryError(
                f"trajectory {traj} frame {ts.frame} has no periodic box; cgkd needs periodic "
                "data, so write the box vectors with each frame"
            )
        positions[i] = ts.positions
        forces[i] = ts.forces
        boxes[i] = triclinic_vectors(ts.dimensions)
        times[i] = ts.time
    frames = Frames(
        positions=positions * NM_PER_ANGSTROM,
        forces=forces * ANGSTROM_PER_NM,
        boxes=boxes * NM_PER_ANGSTROM,
        times=times,
        masses=masses,
        types=types,
        type_names=type_names,
    )
    return universe, frames


def _open_universe(top: Path, traj: Path) -> Universe:
    """Build the universe, turning MDAnalysis errors into one-line :class:`TrajectoryError`."""
    try:
        universe = Universe(str(top))
    except (OSError, ValueError, TypeError) as err:
        raise TrajectoryError(f"cannot read topology {top}: {_one_line(err)}") from None
    n_top = universe.atoms.n_atoms
    # MDAnalysis recognises H5MD only by the .h5md suffix; cgkd also writes .h5.
    fmt = "H5MD" if traj.suffix.lower() in _H5MD_SUFFIXES else None
    try:
        universe.load_new(str(traj), format=fmt)
    except (OSError, ValueError, TypeError, KeyError) as err:
        # load_new attaches the new reader before comparing atom counts.
        reader = getattr(universe, "trajectory", None)
        n_traj = getattr(reader, "n_atoms", n_top)
        if n_traj != n_top and Path(getattr(reader, "filename", "")) == traj:
            raise TrajectoryError(
                f"topology {top} has {n_top} atoms but trajectory {traj} has {n_traj}; "
                "use the topology that belongs to this trajectory"
            ) from None
        raise TrajectoryError(f"cannot read trajectory {traj}: {_one_line(err)}") from None
    return universe


def _one_line(err: Exception) -> str:
    """Type and first line of an exception message (MDAnalysis puts the gist there)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip() if lines else ''}"
