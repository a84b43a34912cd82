"""In-memory trajectory with forces, the data every cgkd stage passes around.

Units are OpenMM's: positions and boxes in nm, forces in kJ/mol/nm, times in ps, masses in amu.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(eq=False)
class Frames:
    """A trajectory of ``T`` frames of ``N`` particles with forces.

    Attributes:
        positions: ``[T, N, 3]`` float64 particle positions, nm.
        forces: ``[T, N, 3]`` float64 forces on the particles, kJ/mol/nm.
        boxes: ``[T, 3, 3]`` float64 periodic box per frame, nm; rows are the box vectors a, b, c.
        times: ``[T]`` float64 simulation time of each frame, ps.
        masses: ``[N]`` float64 particle masses, amu.
        types: ``[N]`` int64 species index of each particle, into ``type_names``.
        type_names: name of each species index.
    """

    positions: np.ndarray
    forces: np.ndarray
    boxes: np.ndarray
    times: np.ndarray
    masses: np.ndarray
    types: np.ndarray
    type_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.positions = np.ascontiguousarray(self.positions, dtype=np.float64)
        self.forces = np.ascontiguousarray(self.forces, dtype=np.float64)
        self.boxes = np.ascontiguousarray(self.boxes, dtype=np.float64)
        self.times = np.ascontiguousarray(self.times, dtype=np.float64)
        self.masses = np.ascontiguousarray(self.masses, dtype=np.float64)
        types = np.asarray(self.types)
        if types.size and not np.issubdtype(types.dtype, np.integer):
            raise ValueError(f"Frames.types must be integer species indices, not {types.dtype}")
        self.types = np.ascontiguousarray(types, dtype=np.int64)
        self.type_names = [str(name) for name in self.type_names]
        self._validate()

    def _validate(self) -> None:
        pos = self.positions
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ValueError(f"Frames.positions must have shape [T, N, 3], got {pos.shape}")
        n_frames, n_particles, _ = pos.shape
        expected = {
            "forces": (self.forces.shape, (n_frames, n_particles, 3)),
            "boxes": (self.boxes.shape, (n_frames, 3, 3)),
            "times": (self.times.shape, (n_frames,)),
            "masses": (self.masses.shape, (n_particles,)),
            "types": (self.types.shape, (n_particles,)),
        }
        for name, (shape, want) in expected.items():
            if shape != want:
                raise ValueError(
                    f"Frames.{name} must have shape {list(want)} to match positions "
                    f"{list(pos.shape)}, got {list(shape)}"
                )
        if len(set(self.type_names)) != len(self.type_names):
            raise ValueError(f"Frames.type_names must be unique, got {self.type_names}")
        if n_particles and (self.types.min() < 0 or self.types.max() >= len(self.type_names)):
            raise ValueError(
                f"Frames.types must index type_names (0..{len(self.type_names) - 1}), "
                f"got values {self.types.min()}..{self.types.max()}"
            )
        if n_particles and not (self.masses.min() >= 0):
            raise ValueError(f"Frames.masses must be non-negative, got minimum {self.masses.min()}")

    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return self.positions.shape[0]

    @property
    def n_particles(self) -> int:
        """Number of particles ``N``."""
        return self.positions.shape[1]

    @classmethod
    def concatenate(cls, parts: list[Frames]) -> Frames:
        """The frames of ``parts`` (of one system) one after another; particles from the first."""
        first = parts[0]
        return cls(
            positions=np.concatenate([p.positions for p in parts]),
            forces=np.concatenate([p.forces for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            times=np.concatenate([p.times for p in parts]),
            masses=first.masses,
            types=first.types,
            type_names=first.type_names,
        )

    def select(self, indices: npt.ArrayLike | slice) -> Frames:
        """Return a copy holding only the frames picked by ``indices`` (ints, mask or slice)."""
        try:
            picked = np.arange(self.n_frames)[indices]
        except IndexError as err:
            msg = f"cannot select frames {indices!r} of {self.n_frames}: {err}"
            raise ValueError(msg) from None
        picked = np.atleast_1d(picked)
        return Frames(
            positions=self.positions[picked],
            forces=self.forces[picked],
            boxes=self.boxes[picked],
            times=self.times[picked],
            masses=self.masses.copy(),
            types=self.types.copy(),
            type_names=list(self.type_names),
        )
