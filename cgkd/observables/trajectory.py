"""Trajectories for analysis: frames read one at a time from arrays, H5MD or DCD files.

A :class:`Trajectory` never loads more than the frame it is asked for when its arrays are
lazy (an ``h5py`` dataset, or the DCD reader below), so observables stream through files of
any length. Units are OpenMM's: nm, ps, nm/ps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cgkd.units import ANGSTROM_PER_NM

if TYPE_CHECKING:
    from cgkd.io.frames import Frames


class FrameArray(Protocol):
    """Anything with a ``shape`` whose ``[t]`` is frame t: a NumPy array, an h5py dataset."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, index: Any) -> Any: ...


@dataclass(frozen=True)
class Frame:
    """One frame: ``positions`` [N, 3] nm, ``box`` [3, 3] nm (rows a, b, c), ``time`` ps,
    ``velocities`` [N, 3] nm/ps or None."""

    index: int
    positions: np.ndarray
    box: np.ndarray
    time: float
    velocities: np.ndarray | None = None


class Trajectory:
    """Frames of ``N`` beads: positions [T, N, 3] and boxes [T, 3, 3] (nm), read per frame.

    Args:
        positions: [T, N, 3] positions, nm; any :class:`FrameArray` (read one frame at a time).
        boxes: [T, 3, 3] box vectors (rows), nm.
        types: [N] integer species of each bead (all 0 when not given).
        type_names: name of each species index (``"0"``, ``"1"``, ... when not given).
        times: [T] time of each frame, ps (``dt * t`` when only ``dt`` is given).
        dt: time between frames, ps; needed by the dynamics observables.
        velocities: [T, N, 3] velocities, nm/ps, when the trajectory has them.
        bonds: [K, 2] bead indices of the bonded pairs (CG bonds of multi-bead molecules);
            none when not given.
        name: label for messages, e.g. the file it came from.
    """

    def __init__(
        self,
        positions: FrameArray,
        boxes: FrameArray,
        *,
        types: Sequence[int] | np.ndarray | None = None,
        type_names: Sequence[str] | None = None,
        times: Sequence[float] | np.ndarray | None = None,
        dt: float | None = None,
        velocities: FrameArray | None = None,
        bonds: np.ndarray | None = None,
        name: str = "trajectory",
    ) -> None:
        self.name = name
        if len(positions.shape) != 3 or positions.shape[2] != 3:
            raise ValueError(f"{name}: positions must have shape [T, N, 3], got {positions.shape}")
        self.n_frames, self.n_beads = int(positions.shape[0]), int(positions.shape[1])
        if tuple(boxes.shape) != (self.n_frames, 3, 3):
            raise ValueError(
                f"{name}: boxes must have shape [T, 3, 3] = {(self.n_frames, 3, 3)}, "
                f"got {tuple(boxes.shape)}"
            )
        if velocities is not None and tuple(velocities.shape) != tuple(positions.shape):
            raise ValueError(
                f"{name}: velocities {tuple(velocities.shape)} and positions "
                f"{tuple(positions.shape)} differ in shape"
            )
        self._positions, self._boxes, self._velocities = positions, boxes, velocities
        self.types = np.zeros(self.n_beads, np.int64) if types is None else np.asarray(types)
        if self.types.shape != (self.n_beads,) or not np.issubdtype(self.types.dtype, np.integer):
            raise ValueError(
                f"{name}: types must be [N] = ({self.n_beads},) integers, got "
                f"{self.types.shape} {self.types.dtype}"
            )
        n_species = int(self.types.max()) + 1 if self.n_beads else 0
        names = [str(k) for k in range(n_species)] if not type_names else list(type_names)
        if len(names) < n_species or len(set(names)) != len(names):
            raise ValueError(
                f"{name}: type_names {names} must name each of the {n_species} species once"
            )
        self.type_names: tuple[str, ...] = tuple(names)
        self.bonds = np.zeros((0, 2), np.int64) if bonds is None else np.asarray(bonds, np.int64)
        if self.bonds.ndim != 2 or self.bonds.shape[1] != 2:
            raise ValueError(f"{name}: bonds must be [K, 2] bead pairs, got {self.bonds.shape}")
        if len(self.bonds) and not (self.bonds.min() >= 0 and self.bonds.max() < self.n_beads):
            raise ValueError(
                f"{name}: bonds name beads {self.bonds.min()}..{self.bonds.max()}, but there are "
                f"{self.n_beads}; give bonds of this system"
            )
        if times is not None:
            self.times = np.asarray(times, dtype=np.float64)
            if self.times.shape != (self.n_frames,):
                raise ValueError(f"{name}: times must be [T] = ({self.n_frames},)")
            spacing = uniform_spacing(self.times)
            if dt is not None and (spacing is None or not np.isclose(spacing, dt, rtol=1e-6)):
                raise ValueError(
                    f"{name}: dt={dt} ps disagrees with the frame times (spacing {spacing}); "
                    "pass times or dt, not both"
                )
        elif dt is not None:
            self.times = float(dt) * np.arange(self.n_frames)
        else:
            self.times = None
        self.dt = dt if dt is not None else uniform_spacing(self.times)

    @property
    def duration(self) -> float | None:
        """Time (ps) from the first frame to the last; None without a frame spacing."""
        return None if self.dt is None else float(self.dt) * (self.n_frames - 1)

    @property
    def has_velocities(self) -> bool:
        """Whether the frames carry velocities."""
        return self._velocities is not None

    def __len__(self) -> int:
        return self.n_frames

    def frame(self, t: int) -> Frame:
        """Frame ``t`` as float64 arrays; a NaN/Inf position or box is a ValueError naming it."""
        positions = np.asarray(self._positions[t], dtype=np.float64)
        box = np.asarray(self._boxes[t], dtype=np.float64)
        if not (np.isfinite(positions).all() and np.isfinite(box).all()):
            raise ValueError(
                f"{self.name}: frame {t} has NaN/Inf positions or box; drop or fix that frame"
            )
        velocities = None
        if self._velocities is not None:
            velocities = np.asarray(self._velocities[t], dtype=np.float64)
            if not np.isfinite(velocities).all():
                raise ValueError(f"{self.name}: frame {t} has NaN/Inf velocities; fix that frame")
        time = float(self.times[t]) if self.times is not None else float("nan")
        return Frame(int(t), positions, box, time, velocities)

    def species_index(self, species: int | str) -> int:
        """The index of a species given by name or index; ValueError listing the valid ones."""
        if isinstance(species, str):
            if species not in self.type_names:
                raise ValueError(
                    f"{self.name}: unknown species {species!r}; use one of {list(self.type_names)}"
                )
            return self.type_names.index(species)
        if not 0 <= int(species) < len(self.type_names):
            last = len(self.type_names) - 1
            raise ValueError(f"{self.name}: species index {species} out of range; use 0..{last}")
        return int(species)

    def species_mask(self, species: int | str | None, role: str = "species") -> np.ndarray:
        """[N] bool of the beads of ``species`` (every bead when None); ValueError when none,
        naming the setting (``role``) to fix."""
        if species is None:
            return np.ones(self.n_beads, dtype=bool)
        mask = self.types == self.species_index(species)
        if not mask.any():
            raise ValueError(f"{self.name}: no bead of species {species!r}; check {role}")
        return mask

    @classmethod
    def from_frames(
        cls, frames: Frames, name: str = "frames", bonds: np.ndarray | None = None
    ) -> Trajectory:
        """The positions, boxes, times and species of cgkd :class:`~cgkd.io.frames.Frames`,
        with its ``bonds`` [K, 2] when given."""
        return cls(
            frames.positions,
            frames.boxes,
            types=frames.types,
            type_names=frames.type_names or None,
            times=frames.times,
            bonds=bonds,
            name=name,
        )

    @classmethod
    def from_h5md(cls, path: str | Path) -> Trajectory:
        """All frames of a cgkd H5MD file (positions, boxes, times, species, bonds), loaded into
        memory.

        cgkd's H5MD files are the mapped references: small next to the CG runs, and their
        frames are needed in order anyway.
        """
        from cgkd.io.h5md import read_h5md, read_h5md_bonds

        return cls.from_frames(read_h5md(path), name=str(path), bonds=read_h5md_bonds(path))

    @classmethod
    def from_dcd(
        cls,
        path: str | Path,
        topology: str | Path,
        *,
        dt: float | None = None,
        type_names: Sequence[str] | None = None,
        types: Sequence[int] | np.ndarray | None = None,
        bonds: np.ndarray | None = None,
    ) -> Trajectory:
        """A DCD file streamed frame by frame through MDAnalysis (Angstrom converted to nm).

        ``topology`` is any file MDAnalysis reads (PDB). ``dt`` (ps between frames) defaults
        to the file's own; species default to the topology's atom names in order of first use;
        ``bonds`` [K, 2] are the bonded bead pairs, when any.
        """
        import MDAnalysis

        for file in (path, topology):
            if not Path(file).is_file():
                raise FileNotFoundError(f"trajectory file {file} does not exist")
        with warnings.catch_warnings():
            # Bead names are not elements, and the DCD reader's copy semantics do not matter
            # when frames are read one at a time: neither warning concerns the caller.
            warnings.filterwarnings("ignore", "Unknown element", UserWarning)
            warnings.filterwarnings("ignore", "DCDReader currently makes", DeprecationWarning)
            universe = MDAnalysis.Universe(str(topology), str(path))
        if types is None:
            names = list(universe.atoms.names)
            type_names = list(dict.fromkeys(names)) if type_names is None else list(type_names)
            unknown = sorted(set(names) - set(type_names))
            if unknown:
                raise ValueError(
                    f"{topology}: atom names {unknown} are not in type_names {type_names}"
                )
            types = np.array([type_names.index(n) for n in names], dtype=np.int64)
        frames = _MDAnalysisFrames(universe)
        return cls(
            frames,
            _MDAnalysisBoxes(frames),
            types=types,
            type_names=type_names,
            dt=universe.trajectory.dt if dt is None else dt,
            bonds=bonds,
            name=str(path),
        )


class _MDAnalysisFrames:
    """Positions [T, N, 3] in nm of an MDAnalysis universe, read on indexing by frame."""

    def __init__(self, universe: Any) -> None:
        self.universe = universe
        self.shape = (len(universe.trajectory), len(universe.atoms), 3)

    def __getitem__(self, t: int) -> np.ndarray:
        return self.universe.trajectory[int(t)].positions.astype(np.float64) / ANGSTROM_PER_NM


class _MDAnalysisBoxes:
    """Box vectors [T, 3, 3] in nm of the same universe."""

    def __init__(self, frames: _MDAnalysisFrames) -> None:
        self.frames = frames
        self.shape = (frames.shape[0], 3, 3)

    def __getitem__(self, t: int) -> np.ndarray:
        from MDAnalysis.lib.mdamath import triclinic_vectors

        dimensions = self.frames.universe.trajectory[int(t)].dimensions
        return triclinic_vectors(dimensions).astype(np.float64) / ANGSTROM_PER_NM


def uniform_spacing(times: np.ndarray | None) -> float | None:
    """The mean time step (ps) of equally spaced ``times``, or None when unknown or uneven.

    Steps may differ by rounding: a relative 1e-6, or two float32 units of the largest time
    (trajectory formats such as TRR, DCD and NetCDF store times in single precision).
    """
    if times is None or len(times) < 2:
        return None
    times = np.asarray(times, dtype=np.float64)
    steps = np.diff(times)
    spacing = (times[-1] - times[0]) / (len(times) - 1)
    rounding = 2.0 * float(np.spacing(np.float32(np.abs(times).max())))
    if spacing > 0 and np.allclose(steps, spacing, rtol=1e-6, atol=max(rounding, 1e-9)):
        return float(spacing)
    return None
