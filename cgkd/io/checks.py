"""Checks of users' trajectory files that MDAnalysis does not make itself, and the one-line
error they raise: truncated LAMMPS dumps and TNG files, and missing forces (with how each MD
engine writes them).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

#: How to get forces into a trajectory, by MDAnalysis format name.
_GROMACS_FORCES = "GROMACS: set nstfout in the .mdp (forces go to the .trr) and rerun"
_AMBER_FORCES = "AMBER: set ntwf in the mdin (ntwf=-1 with NetCDF output, ioutfm=1)"
_LAMMPS_FORCES = (
    "LAMMPS: dump custom with fx fy fz columns (dump 1 all custom N f.dump id type x y z fx fy fz)"
)
_OPENMM_FORCES = "OpenMM: write State.getForces() with a forces reporter (e.g. into H5MD)"
_NO_FORCES_FIX = {
    "TRR": _GROMACS_FORCES,
    "TNG": _GROMACS_FORCES,
    "XTC": "XTC files cannot hold them; " + _GROMACS_FORCES,
    "NCDF": _AMBER_FORCES,
    "NC": _AMBER_FORCES,
    "LAMMPSDUMP": _LAMMPS_FORCES,
    "H5MD": "write the H5MD force element; " + _OPENMM_FORCES,
    "DCD": "DCD files cannot hold them; " + _OPENMM_FORCES + "; " + _LAMMPS_FORCES,
}
_ANY_FORCES_FIX = "; ".join((_GROMACS_FORCES, _AMBER_FORCES, _LAMMPS_FORCES, _OPENMM_FORCES))


class TrajectoryError(ValueError):
    """A topology/trajectory pair cannot be turned into frames with forces."""


def no_forces(reader: Any, traj: Path) -> TrajectoryError:
    """The no-forces error, with how the format's engine writes forces."""
    formats = reader.format if isinstance(reader.format, list | tuple) else [reader.format]
    fix = next((_NO_FORCES_FIX[f] for f in formats if f in _NO_FORCES_FIX), _ANY_FORCES_FIX)
    return TrajectoryError(f"trajectory {traj} has no forces; {fix}")


def check_dump_lines(path: Path, n_frames: int, n_atoms: int) -> None:
    """MDAnalysis counts whole frames of a text dump and ignores a cut-off last one: check."""
    with open(path, "rb") as handle:
        data_lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(2**24), b""))
        handle.seek(-1, 2)
        data_lines += handle.read(1) != b"\n"
    if data_lines != n_frames * (n_atoms + 9):
        raise TrajectoryError(
            f"LAMMPS dump {path} is truncated or corrupt: {data_lines} lines is not {n_frames} "
            f"frames of {n_atoms} atoms plus 9 header lines; re-copy the file"
        )


def check_tng_blocks(path: Path) -> None:
    """Walk the TNG block headers: the TNG library crashes the process on a cut-off block.

    Each block starts with its header size, contents size and id (int64, either byte order).
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        position = 0
        while position < size:
            handle.seek(position)
            header = handle.read(24)
            sizes = None
            for order in "<>":
                if len(header) == 24:
                    header_size, contents_size, _ = struct.unpack(order + "qqq", header)
                    if 0 < header_size < 2**20 and 0 <= contents_size < 2**40:
                        sizes = header_size, contents_size
                        break
            if sizes is None or position + sum(sizes) > size:
                raise TrajectoryError(
                    f"TNG trajectory {path} is truncated or corrupt (block at byte {position} of "
                    f"{size} is incomplete); re-copy the file"
                )
            position += sum(sizes)


def one_line(err: Exception) -> str:
    """Type and first line of an exception message (MDAnalysis puts the gist there)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip() if lines else ''}"
