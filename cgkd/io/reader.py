"""Opening a user's trajectory with MDAnalysis: the format from the suffix, the units the
reader delivers, a periodic box per frame, and one-line errors for unreadable files."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.coordinates.core import get_reader_for
from MDAnalysis.lib.mdamath import triclinic_vectors

from cgkd.io.checks import (
    TrajectoryError,
    check_dump_lines,
    check_tng_blocks,
    no_forces,
    one_line,
)
from cgkd.units import FORCE_TO_KJ_MOL_NM, LENGTH_TO_NM, TIME_TO_PS, UNIT_PRESETS

#: MDAnalysis's base units, in which a reader delivers values when it converts units itself.
_MDA_BASE_UNITS = {"length": "angstrom", "force": "kJ/mol/angstrom", "time": "ps"}

#: Suffixes MDAnalysis does not map to the right reader by itself.
_FORMAT_BY_SUFFIX = {
    ".h5": "H5MD",
    ".hdf5": "H5MD",
    ".h5md": "H5MD",
    ".dump": "LAMMPSDUMP",
    ".lammpstrj": "LAMMPSDUMP",
    ".lammpsdump": "LAMMPSDUMP",
}

#: MDAnalysis raises many types for unreadable or cut-off files; all mean "this file is bad".
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, RuntimeError)


@dataclass(frozen=True, eq=False)
class OpenTrajectory:
    """A topology + trajectory opened with MDAnalysis.

    ``units`` are the units of the values its reader delivers (MDAnalysis's base units when it
    converts, the file's own when the user stated them).
    """

    universe: Universe
    path: Path
    units: dict[str, str]


def open_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    *,
    units: str | Mapping[str, str] | None = None,
    format: str | None = None,
    timestep: float | None = None,
) -> OpenTrajectory:
    """The MDAnalysis universe of ``topology`` + ``trajectory``, checked for readability.

    ``units``: the file's own units (preset name or mapping), for formats that do not record
    them; when given, they replace what MDAnalysis assumes for the format. ``format``: the
    MDAnalysis format name, when the suffix does not tell. ``timestep``: the MD time step in the
    file's time unit, for formats that store step numbers instead of times (LAMMPS dumps).
    """
    top, traj = Path(topology), Path(trajectory)
    for path, kind in ((top, "topology"), (traj, "trajectory")):
        if not path.is_file():
            raise TrajectoryError(f"{kind} file {path} does not exist; check the path")
        if path.stat().st_size == 0:
            raise TrajectoryError(f"{kind} file {path} is empty (0 bytes); re-copy or re-write it")
    native = None if units is None else _resolve_units(units, traj)
    fmt = format or _FORMAT_BY_SUFFIX.get(traj.suffix.lower())
    if (fmt or traj.suffix.lstrip(".")).upper() == "TNG":
        check_tng_blocks(traj)
    options: dict[str, Any] = {"convert_units": native is None}
    if timestep is not None:
        options["dt"] = timestep
    elif fmt == "LAMMPSDUMP":
        warnings.warn(
            f"LAMMPS dump {traj} stores step numbers, not times; set input.timestep to the "
            "run's time step (in the file's time unit) to get times in ps",
            UserWarning,
            stacklevel=2,
        )
        options["dt"] = 1.0
    universe = _open_universe(top, traj, fmt, options)
    if not universe.trajectory.ts.has_forces:
        raise no_forces(universe.trajectory, traj)
    return OpenTrajectory(universe, traj, native or _reader_units(universe.trajectory, traj))


def _resolve_units(units: str | Mapping[str, str], path: Path) -> dict[str, str]:
    """A unit preset name or mapping, checked against the known unit names."""
    if isinstance(units, str):
        if units not in UNIT_PRESETS:
            raise TrajectoryError(
                f"unknown unit preset {units!r} for {path}; use one of {sorted(UNIT_PRESETS)} "
                "or a mapping with length, force and time"
            )
        return dict(UNIT_PRESETS[units])
    resolved = {}
    for quantity, table in (
        ("length", LENGTH_TO_NM),
        ("force", FORCE_TO_KJ_MOL_NM),
        ("time", TIME_TO_PS),
    ):
        name = units.get(quantity)
        if name not in table:
            raise TrajectoryError(
                f"unknown {quantity} unit {name!r} for {path}; use one of {sorted(table)}"
            )
        resolved[quantity] = name
    return resolved


def frame_box(ts: Any, traj: Path) -> np.ndarray:
    """The ``[3, 3]`` box of frame ``ts`` in the file's length unit, or an error if it has none."""
    if ts.dimensions is None or not np.all(ts.dimensions[:3] > 0):
        raise TrajectoryError(
            f"trajectory {traj} frame {ts.frame} has no periodic box; cgkd needs periodic data, "
            "so write the box vectors with each frame"
        )
    return triclinic_vectors(ts.dimensions)


def _open_universe(top: Path, traj: Path, fmt: str | None, options: dict[str, Any]) -> Universe:
    """Build the universe, turning MDAnalysis errors into one-line :class:`TrajectoryError`.

    Nothing is guessed (:func:`atom_masses` guesses masses, so that it knows they are guesses).
    """
    try:
        universe = Universe(str(top), to_guess=())
    except _READ_ERRORS as err:
        raise TrajectoryError(f"cannot read topology {top}: {one_line(err)}") from None
    n_top = universe.atoms.n_atoms
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Reader has no dt information")
            universe.load_new(str(traj), format=fmt, **options)
    except _READ_ERRORS as err:
        n_traj = _atom_count(universe, traj, fmt)
        if n_traj is not None and n_traj != n_top:
            raise TrajectoryError(
                f"topology {top} has {n_top} atoms but trajectory {traj} has {n_traj}; "
                "use the topology that belongs to this trajectory"
            ) from None
        raise TrajectoryError(
            f"cannot read trajectory {traj} (truncated, corrupt or not the format its suffix "
            f"says?): {one_line(err)}"
        ) from None
    if universe.trajectory.n_frames == 0:
        raise TrajectoryError(f"trajectory {traj} has no frames; re-copy or re-write it")
    if universe.trajectory.format == "LAMMPSDUMP":
        check_dump_lines(traj, universe.trajectory.n_frames, n_top)
    return universe


def _atom_count(universe: Universe, traj: Path, fmt: str | None) -> int | None:
    """Atoms in ``traj`` after a failed load: from the reader load_new attached before it
    compared atom counts, else from the file's reader alone (NetCDF refuses a wrong count
    while opening); ``None`` if neither can tell."""
    reader = getattr(universe, "trajectory", None)
    if reader is not None and Path(getattr(reader, "filename", "")) == traj:
        return int(reader.n_atoms)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alone = get_reader_for(str(traj), format=fmt)(str(traj))
        n_atoms = int(alone.n_atoms)
        alone.close()
    except _READ_ERRORS:
        return None
    return n_atoms


def _reader_units(reader: Any, traj: Path) -> dict[str, str]:
    """Units of the values a converting reader delivers, or an error if the format has none."""
    known = getattr(reader, "units", {}) or {}
    missing = [q for q in ("length", "force") if known.get(q) is None]
    if missing:
        raise TrajectoryError(
            f"trajectory {traj} ({reader.format}) does not record its {' and '.join(missing)} "
            f"units; set input.units to one of {sorted(UNIT_PRESETS)} or to "
            "{length: ..., force: ..., time: ...}"
        )
    return dict(_MDA_BASE_UNITS)


def read_frame(reader: Any, index: int, traj: Path) -> Any:
    """Frame ``index`` of ``reader``, or a one-line error naming the frame where it breaks."""
    try:
        return reader[index]
    except _READ_ERRORS as err:
        raise TrajectoryError(
            f"trajectory {traj} is truncated or corrupt at frame {index} ({one_line(err)}); "
            f"re-copy the file, or set input.stop={index} to use the frames before it"
        ) from None
