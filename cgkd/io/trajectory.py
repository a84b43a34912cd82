"""Users' all-atom trajectories with forces, read through MDAnalysis, streamed into H5MD.

Any format MDAnalysis reads with forces and a periodic box works: GROMACS TRR and TNG, H5MD,
AMBER NetCDF, LAMMPS dumps with ``fx fy fz`` columns, ... with a topology file that MDAnalysis
reads (PDB, GRO, PSF, TPR, PRMTOP, LAMMPS data, ...). Values are converted at this edge to
nm, kJ/mol/nm and ps. A format that does not record its units (LAMMPS dumps; H5MD without
unit attributes) needs them stated with ``units`` (a preset from :data:`UNIT_PRESETS` or a
mapping with ``length``, ``force`` and ``time``). Species are the residue names.

Opening a file (formats, units, boxes): :mod:`cgkd.io.reader`; masses, virtual sites and the
data's temperature: :mod:`cgkd.io.atoms`; file checks and the one-line error:
:mod:`cgkd.io.checks`.

:func:`import_trajectory` streams the selected frames chunk by chunk into the same H5MD layout
that cgkd generates, so memory stays bounded for trajectories larger than memory and the
rest of the pipeline does not care where its data came from.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from MDAnalysis import Universe
from tqdm.auto import tqdm

from cgkd.io.atoms import (
    SAMPLE_FRAMES,
    AtomMasses,
    atom_masses,
    check_virtual_sites,
    data_temperature,
)
from cgkd.io.checks import (
    TrajectoryError,
    no_forces,
)
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDWriter
from cgkd.io.reader import OpenTrajectory, frame_box, open_trajectory, read_frame
from cgkd.units import (
    FORCE_TO_KJ_MOL_NM,
    LENGTH_TO_NM,
    TIME_TO_PS,
)

#: Frames x atoms read at once, to bound memory (~100 MB of float64 positions and forces).
CHUNK_ELEMENTS = 2_000_000


class BadFramesWarning(UserWarning):
    """Frames with NaN/Inf values or absurd forces were left out."""


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to read: indices ``start:stop:step``, then times in [time_start, time_stop].

    Times are in ps and assume a constant interval between frames (checked while reading).
    """

    start: int | None = None
    stop: int | None = None
    step: int | None = None
    time_start: float | None = None
    time_stop: float | None = None

    def __post_init__(self) -> None:
        if self.step is not None and self.step < 1:
            raise ValueError(f"frame step must be >= 1, got {self.step}")
        if (
            self.time_start is not None
            and self.time_stop is not None
            and self.time_stop < self.time_start
        ):
            raise ValueError(
                f"time_stop {self.time_stop} ps is before time_start {self.time_start} ps; "
                "swap them"
            )


@dataclass(frozen=True)
class FrameScreen:
    """Which frames count as bad, and what to do with them.

    A frame is bad when a position, force or box entry is NaN/Inf or an atom's force exceeds
    ``max_force`` kJ/mol/nm. ``on_bad_frame="error"`` stops with the frame named; ``"drop"``
    leaves such frames out and warns with their count.
    """

    max_force: float = 1e5
    on_bad_frame: str = "error"

    def __post_init__(self) -> None:
        if self.on_bad_frame not in ("error", "drop"):
            raise ValueError(f"on_bad_frame {self.on_bad_frame!r} is unknown; use error or drop")
        if not self.max_force > 0:
            raise ValueError(f"max_force must be positive (kJ/mol/nm), got {self.max_force}")


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_trajectory` wrote: the H5MD path, how many frames it kept/dropped,
    and the data's temperature (K; ``None`` when unknown) with where it came from."""

    path: Path
    n_frames: int
    n_dropped: int
    n_atoms: int
    temperature: float | None
    temperature_from: str


@dataclass(frozen=True)
class FrameSample:
    """Frames spread over a selection (:func:`sample_frames`): positions, boxes (nm), forces
    (kJ/mol/nm) [T, N, 3] and velocities (nm/ps; ``None`` unless every frame has non-zero
    velocities)."""

    positions: np.ndarray
    boxes: np.ndarray
    forces: np.ndarray
    velocities: np.ndarray | None


def iter_frames(
    trajectory: OpenTrajectory,
    selection: FrameSelection | None = None,
    *,
    masses: AtomMasses | None = None,
    chunk_frames: int | None = None,
) -> Iterator[Frames]:
    """Selected frames in nm, kJ/mol/nm, ps, amu, at most ``chunk_frames`` at a time.

    ``masses`` default to :func:`atom_masses` of the topology; a virtual site among them that
    has a force in some frame is an error.
    """
    universe, traj, units = trajectory.universe, trajectory.path, trajectory.units
    reader = universe.trajectory
    selection = selection or FrameSelection()
    indices = _selected_indices(trajectory, selection)
    if masses is None:
        masses = atom_masses(trajectory, _sample(trajectory, indices))
    window = _time_window(selection, 1.0)
    atoms = universe.atoms
    type_names = sorted(set(atoms.resnames))
    types = np.searchsorted(type_names, atoms.resnames)
    to_nm, to_kj = LENGTH_TO_NM[units["length"]], FORCE_TO_KJ_MOL_NM[units["force"]]
    to_ps = TIME_TO_PS[units["time"]]
    chunk = chunk_frames or max(1, CHUNK_ELEMENTS // max(1, atoms.n_atoms))
    n_atoms = atoms.n_atoms
    for lo in range(0, len(indices), chunk):
        picked = indices[lo : lo + chunk]
        positions = np.empty((len(picked), n_atoms, 3))
        forces = np.empty((len(picked), n_atoms, 3))
        boxes = np.empty((len(picked), 3, 3))
        times = np.empty(len(picked))
        for i, frame in enumerate(picked):
            ts = read_frame(reader, int(frame), traj)
            if not ts.has_forces:
                raise no_forces(reader, traj)
            positions[i] = ts.positions
            forces[i] = ts.forces
            boxes[i] = frame_box(ts, traj)
            times[i] = ts.time
        if not np.all((times * to_ps >= window[0]) & (times * to_ps <= window[1])):
            raise TrajectoryError(
                f"trajectory {traj} has unevenly spaced frame times, so input.time_start/"
                "time_stop cannot pick frames; select them with input.start/stop/step"
            )
        check_virtual_sites(forces, masses, trajectory, times * to_ps)
        yield Frames(
            positions=positions * to_nm,
            forces=forces * to_kj,
            boxes=boxes * to_nm,
            times=times * to_ps,
            masses=masses.values,
            types=types,
            type_names=type_names,
        )


def load_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    *,
    selection: FrameSelection | None = None,
    units: str | Mapping[str, str] | None = None,
    format: str | None = None,
    timestep: float | None = None,
    screen: FrameScreen | None = None,
    masses: Mapping[str, float] | None = None,
) -> tuple[Universe, Frames]:
    """Read the selected frames of ``trajectory`` into memory (nm, kJ/mol/nm, ps, amu).

    For data that fit in memory; :func:`import_trajectory` streams. ``units``, ``format`` and
    ``timestep`` as in :func:`open_trajectory`; bad frames are handled as ``screen`` says
    (default: an error); ``masses`` as in :func:`atom_masses`.
    """
    opened = open_trajectory(topology, trajectory, units=units, format=format, timestep=timestep)
    selection = selection or FrameSelection()
    atom_mass = atom_masses(opened, sample_frames(opened, selection), masses)
    check = screen or FrameScreen()
    chunks = [
        _screened(chunk, check, opened.path)
        for chunk in iter_frames(opened, selection, masses=atom_mass)
    ]
    kept = [frames for frames, _ in chunks if frames.n_frames]
    n_dropped = sum(n for _, n in chunks)
    _warn_dropped(n_dropped, sum(f.n_frames for f in kept) + n_dropped, opened.path, check)
    if not kept:
        raise _all_bad(n_dropped, opened.path, check)
    return opened.universe, Frames.concatenate(kept)


def import_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    out_path: str | Path,
    *,
    selection: FrameSelection | None = None,
    units: str | Mapping[str, str] | None = None,
    format: str | None = None,
    timestep: float | None = None,
    screen: FrameScreen | None = None,
    masses: Mapping[str, float] | None = None,
    temperature: float | None = None,
    require_temperature: bool = False,
    config: dict[str, Any] | None = None,
    chunk_frames: int | None = None,
    progress: bool = True,
) -> ImportResult:
    """Stream the selected, screened frames of a user's trajectory into H5MD at ``out_path``.

    Stored in single precision (what MDAnalysis reads); the file appears only when complete.
    Options as in :func:`load_trajectory`. ``temperature`` (K) is the data's; without it, it is
    measured from the trajectory's velocities (:func:`data_temperature`), and with
    ``require_temperature`` a trajectory without velocities is an error before any frame is
    copied. ``config`` is recorded with the source files, the selection, units, screen, masses
    and temperature.
    """
    opened = open_trajectory(topology, trajectory, units=units, format=format, timestep=timestep)
    universe = opened.universe
    selection, screen = selection or FrameSelection(), screen or FrameScreen()
    indices = _selected_indices(opened, selection)
    sample = _sample(opened, indices)
    atom_mass = atom_masses(opened, sample, masses)
    kelvin, kelvin_from = data_temperature(opened, sample, atom_mass, temperature)
    if kelvin is None and require_temperature:
        raise TrajectoryError(
            f"trajectory {opened.path} has no velocities to measure the data's temperature "
            "from; set input.temperature=<K> to the temperature the data were made at"
        )
    atoms = universe.atoms
    type_names = sorted(set(atoms.resnames))
    record = {
        **(config or {}),
        "source": {
            "topology": str(topology),
            "trajectory": str(trajectory),
            "selection": asdict(selection),
            "units": opened.units,
            "screen": asdict(screen),
            "masses": atom_mass.record(),
            "temperature": {"value": kelvin, "from": kelvin_from},
        },
    }
    n_dropped = 0
    with (
        H5MDWriter(
            out_path,
            masses=atom_mass.values,
            types=np.searchsorted(type_names, atoms.resnames),
            type_names=type_names,
            config=record,
            dtype=np.float32,
        ) as writer,
        tqdm(total=len(indices), desc="import", unit="frame", disable=not progress) as bar,
    ):
        for chunk in iter_frames(opened, selection, masses=atom_mass, chunk_frames=chunk_frames):
            kept, dropped = _screened(chunk, screen, opened.path)
            n_dropped += dropped
            if kept.n_frames:
                writer.append(kept)
            bar.update(chunk.n_frames)
        if writer.n_frames == 0:
            raise _all_bad(n_dropped, opened.path, screen)
        writer.config["source"]["n_dropped"] = n_dropped
    _warn_dropped(n_dropped, len(indices), opened.path, screen)
    return ImportResult(
        Path(out_path), writer.n_frames, n_dropped, atoms.n_atoms, kelvin, kelvin_from
    )


def sample_frames(trajectory: OpenTrajectory, selection: FrameSelection) -> FrameSample:
    """Up to :data:`SAMPLE_FRAMES` of the selected frames, spread evenly, in nm, kJ/mol/nm and
    nm/ps (frames with NaN/Inf velocities left out of the velocities)."""
    return _sample(trajectory, _selected_indices(trajectory, selection))


def _sample(trajectory: OpenTrajectory, indices: np.ndarray) -> FrameSample:
    """:func:`sample_frames` of the frame ``indices``."""
    reader, traj, units = trajectory.universe.trajectory, trajectory.path, trajectory.units
    spots = np.linspace(0, len(indices) - 1, SAMPLE_FRAMES).round().astype(int)
    picked = indices[np.unique(spots)]
    positions, boxes, forces, velocities = [], [], [], []
    for frame in picked:
        ts = read_frame(reader, int(frame), traj)
        if not ts.has_forces:
            raise no_forces(reader, traj)
        positions.append(ts.positions.astype(np.float64))
        boxes.append(frame_box(ts, traj))
        forces.append(ts.forces.astype(np.float64))
        velocities.append(ts.velocities.astype(np.float64) if ts.has_velocities else None)
    to_nm, to_ps = LENGTH_TO_NM[units["length"]], TIME_TO_PS[units["time"]]
    moving = [v for v in velocities if v is not None and np.isfinite(v).all()]
    has_velocities = all(v is not None for v in velocities) and any(np.any(v) for v in moving)
    return FrameSample(
        positions=np.stack(positions) * to_nm,
        boxes=np.stack(boxes) * to_nm,
        forces=np.stack(forces) * FORCE_TO_KJ_MOL_NM[units["force"]],
        velocities=np.stack(moving) * (to_nm / to_ps) if has_velocities else None,
    )


def _selected_indices(trajectory: OpenTrajectory, selection: FrameSelection) -> np.ndarray:
    reader, traj = trajectory.universe.trajectory, trajectory.path
    indices = np.arange(reader.n_frames)[selection.start : selection.stop : selection.step]
    if selection.time_start is not None or selection.time_stop is not None:
        # Frame times from the first two frames; iter_frames checks the spacing is constant.
        to_ps = TIME_TO_PS[trajectory.units["time"]]
        t0 = read_frame(reader, 0, traj).time * to_ps
        dt = read_frame(reader, 1, traj).time * to_ps - t0 if reader.n_frames > 1 else 0.0
        times = t0 + dt * indices
        lo, hi = _time_window(selection, dt)
        indices = indices[(times >= lo) & (times <= hi)]
    if len(indices) == 0:
        raise TrajectoryError(
            f"trajectory {traj} has no frames in {selection} (it has {reader.n_frames}); "
            "widen the frame or time range"
        )
    return indices


def _time_window(selection: FrameSelection, dt: float) -> tuple[float, float]:
    """[time_start, time_stop] in ps, widened by a rounding tolerance of the frame interval."""
    slack = 1e-6 * abs(dt)
    lo = -np.inf if selection.time_start is None else selection.time_start - slack
    hi = np.inf if selection.time_stop is None else selection.time_stop + slack
    return lo, hi


def _screened(frames: Frames, screen: FrameScreen, traj: Path) -> tuple[Frames, int]:
    """``frames`` without bad ones (or an error naming the first), and how many were dropped."""
    finite = (
        np.isfinite(frames.positions).all(axis=(1, 2))
        & np.isfinite(frames.forces).all(axis=(1, 2))
        & np.isfinite(frames.boxes).all(axis=(1, 2))
    )
    with np.errstate(invalid="ignore"):
        largest = np.nan_to_num(np.linalg.norm(frames.forces, axis=2), nan=np.inf).max(axis=1)
    good = finite & (largest <= screen.max_force)
    if good.all():
        return frames, 0
    first = int(np.flatnonzero(~good)[0])
    reason = (
        "NaN/Inf values"
        if not finite[first]
        else f"an atom force of {largest[first]:.3g} kJ/mol/nm (max_force {screen.max_force:g})"
    )
    if screen.on_bad_frame == "error":
        raise TrajectoryError(
            f"trajectory {traj} frame at t={frames.times[first]:g} ps has {reason}; fix the data, "
            "check its units, or set input.on_bad_frame=drop to leave such frames out"
        )
    return frames.select(np.flatnonzero(good)), int((~good).sum())


def _warn_dropped(n_dropped: int, total: int, traj: Path, screen: FrameScreen) -> None:
    if n_dropped:
        warnings.warn(
            f"dropped {n_dropped} of {total} frames of {traj} with NaN/Inf values or forces "
            f"above {screen.max_force:g} kJ/mol/nm (input.on_bad_frame=drop)",
            BadFramesWarning,
            stacklevel=3,
        )


def _all_bad(n_dropped: int, traj: Path, screen: FrameScreen) -> TrajectoryError:
    return TrajectoryError(
        f"all {n_dropped} selected frames of {traj} are bad (NaN/Inf or forces above "
        f"{screen.max_force:g} kJ/mol/nm); check the file and its units"
    )
