"""H5MD 1.1 files of positions and forces, readable by cgkd and by MDAnalysis.

Layout written by :func:`write_h5md` (``T`` frames, ``N`` particles, ``K`` constraints)::

    /h5md                         version=[1, 1]
        author                    name=<user>
        creator                   name="cgkd", version=<cgkd version>
    /particles/<group>            one group per file, "all" by default
        box                       dimension=3, boundary=["periodic"] * 3
            edges/step  [T] int64
            edges/time  [T] float64, unit "ps"
            edges/value [T, 3, 3] float64, unit "nm"; rows are the box vectors a, b, c
        position/{step,time}      hard links to box/edges/{step,time}
        position/value [T, N, 3]  float64, unit "nm"
        force/{step,time}         hard links to box/edges/{step,time}
        force/value [T, N, 3]     float64, unit "kJ mol-1 nm-1"
        mass [N]                  float64, unit "u" (amu)
        species [N]               int64, attribute type_names=[name of each species index]
    /connectivity/constraints     [K, 2] int64 particle pairs with fixed distance (only if given),
                                  attribute particles_group = reference to /particles/<group>
    /connectivity/bonds           [K, 2] int64 bonded particle pairs (only if given; CG bonds)
    /parameters                   attribute cgkd_config = the run configuration as a JSON string

Per-frame datasets are chunked and resizable, so :class:`H5MDWriter` can stream frames in
and :class:`H5MDReader` can read a frame range without loading the rest.

Unit attributes are variable-length strings spelled as MDAnalysis's H5MD reader expects, so
``MDAnalysis.Universe(topology, path)`` reads the file and converts to Angstrom and
kJ/(mol Angstrom) itself.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cgkd import __version__
from cgkd.io.atomic import atomic_path
from cgkd.io.frames import Frames

LENGTH_UNIT = "nm"
TIME_UNIT = "ps"
FORCE_UNIT = "kJ mol-1 nm-1"
MASS_UNIT = "u"


class H5MDError(ValueError):
    """An H5MD file is missing, malformed, or lacks data cgkd needs."""


def write_h5md(
    path: str | Path,
    frames: Frames,
    *,
    group: str = "all",
    config: dict[str, Any] | None = None,
    steps: np.ndarray | None = None,
    constraints: np.ndarray | None = None,
    bonds: np.ndarray | None = None,
) -> Path:
    """Write ``frames`` (nm, kJ/mol/nm, ps, amu) atomically as an H5MD 1.1 file; return the path.

    ``steps`` are the integration step of each frame (default: the frame index);
    ``constraints`` and ``bonds`` are ``[K, 2]`` arrays of constrained / bonded particle pairs;
    ``config`` is stored as JSON under ``/parameters``.
    """
    step_values = _check_steps(steps, frames.n_frames, Path(path))
    with H5MDWriter(
        path,
        masses=frames.masses,
        types=frames.types,
        type_names=frames.type_names,
        group=group,
        config=config,
        constraints=constraints,
        bonds=bonds,
    ) as writer:
        writer.append(frames, steps=step_values)
    return writer.path


class H5MDWriter:
    """Stream frames into an H5MD 1.1 file that appears under its final name only when complete.

    Frames go to a temporary sibling file; leaving the ``with`` block normally renames it to
    ``path`` (after storing ``config``, which may be updated until then), an exception deletes
    it. ``dtype`` is the stored precision of positions, forces and boxes (float64 by default;
    float32 halves the size of imported single-precision trajectories).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        masses: np.ndarray,
        types: np.ndarray,
        type_names: list[str],
        group: str = "all",
        config: dict[str, Any] | None = None,
        constraints: np.ndarray | None = None,
        bonds: np.ndarray | None = None,
        dtype: type = np.float64,
    ) -> None:
        self.path = Path(path)
        if not group or "/" in group:
            raise H5MDError(
                f"H5MD particle group name {group!r} for {self.path} must be non-empty, no '/'"
            )
        self.config = dict(config or {})
        _config_to_json(self.config, self.path)  # fail before any work, not at the end
        self.n_frames = 0
        self._n_particles = len(masses)
        self._connectivity = {
            name: _check_pairs(pairs, name, self._n_particles, self.path)
            for name, pairs in (("constraints", constraints), ("bonds", bonds))
            if pairs is not None
        }
        self._group, self._dtype = group, dtype
        self._static = (np.asarray(masses, np.float64), np.asarray(types, np.int64), type_names)
        self._atomic = atomic_path(self.path)
        self._file: h5py.File | None = None

    def __enter__(self) -> H5MDWriter:
        tmp = self._atomic.__enter__()
        try:
            self._file = h5py.File(tmp, "w")
            self._create_layout(self._file)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._file is not None, "H5MDWriter used outside its with block"
        try:
            if exc_type is None:
                config_json = _config_to_json(self.config, self.path)
                self._file["parameters"].attrs["cgkd_config"] = config_json
        except BaseException:
            self._file.close()
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._file.close()
        self._atomic.__exit__(exc_type, exc, tb)

    def append(self, frames: Frames, *, steps: np.ndarray | None = None) -> None:
        """Append ``frames`` (same particles); ``steps`` default to running frame indices."""
        if self._file is None:
            raise H5MDError(f"append to {self.path} inside the writer's with block")
        if frames.n_particles != self._n_particles:
            raise H5MDError(
                f"frames of {frames.n_particles} particles cannot go into {self.path}, "
                f"which holds {self._n_particles}"
            )
        start, count = self.n_frames, frames.n_frames
        if steps is None:
            steps = np.arange(start, start + count)
        steps = _check_steps(steps, count, self.path)
        particles = self._file["particles"][self._group]
        for dataset, data in (
            (particles["box/edges/step"], steps),
            (particles["box/edges/time"], frames.times),
            (particles["box/edges/value"], frames.boxes),
            (particles["position/value"], frames.positions),
            (particles["force/value"], frames.forces),
        ):
            dataset.resize(start + count, axis=0)
            dataset[start:] = data
        self.n_frames += count

    def _create_layout(self, f: h5py.File) -> None:
        masses, types, type_names = self._static
        n, dtype = self._n_particles, self._dtype
        _write_metadata(f)
        particles = f.create_group(f"particles/{self._group}")
        box = particles.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = ["periodic"] * 3
        edges = box.create_group("edges")
        # At most 1 MiB and 64 frames per chunk of per-particle data, so appends and partial
        # reads stay cheap and small files stay small.
        frames_per_chunk = max(1, min(64, 2**20 // max(1, n * 3 * np.dtype(dtype).itemsize)))
        step_ds = edges.create_dataset("step", (0,), np.int64, maxshape=(None,), chunks=(64,))
        time_ds = edges.create_dataset("time", (0,), np.float64, maxshape=(None,), chunks=(64,))
        time_ds.attrs["unit"] = TIME_UNIT
        value = edges.create_dataset(
            "value", (0, 3, 3), dtype, maxshape=(None, 3, 3), chunks=(64, 3, 3)
        )
        value.attrs["unit"] = LENGTH_UNIT
        for name, unit in (("position", LENGTH_UNIT), ("force", FORCE_UNIT)):
            element = particles.create_group(name)
            element["step"] = step_ds
            element["time"] = time_ds
            data = element.create_dataset(
                "value", (0, n, 3), dtype, maxshape=(None, n, 3), chunks=(frames_per_chunk, n, 3)
            )
            data.attrs["unit"] = unit
        particles.create_dataset("mass", data=masses).attrs["unit"] = MASS_UNIT
        species = particles.create_dataset("species", data=types)
        species.attrs["type_names"] = np.array(type_names, dtype=h5py.string_dtype())
        for name, pairs in self._connectivity.items():
            dset = f.create_dataset(f"connectivity/{name}", data=pairs)
            dset.attrs["particles_group"] = particles.ref
        f.create_group("parameters")


def read_h5md(path: str | Path, group: str = "all") -> Frames:
    """Read positions (nm), forces (kJ/mol/nm), boxes, times, masses and species of ``group``."""
    with H5MDReader(path, group) as reader:
        return reader.read()


class H5MDReader:
    """Read an H5MD file of positions and forces whole, by frame range, or in chunks.

    Opened with ``with``; ``n_frames``, ``n_particles``, ``masses``, ``types`` and
    ``type_names`` are known up front. Data are returned in nm, kJ/mol/nm, ps, amu.
    """

    def __init__(self, path: str | Path, group: str = "all") -> None:
        self.path = Path(path)
        self._file = _open(self.path)
        try:
            particles = _particle_group(self._file, group, self.path)
            for name in ("position", "force", "mass", "species"):
                if name not in particles:
                    hint = " (write forces with the trajectory)" if name == "force" else ""
                    raise H5MDError(f"H5MD file {self.path} has no /particles/{group}/{name}{hint}")
            self._positions = particles["position/value"]
            self._forces = particles["force/value"]
            _check_unit(self._positions, LENGTH_UNIT, self.path)
            _check_unit(self._forces, FORCE_UNIT, self.path)
            if self._forces.shape != self._positions.shape:
                raise H5MDError(
                    f"H5MD file {self.path} has positions {self._positions.shape} but forces "
                    f"{self._forces.shape}; the file is truncated or corrupt, regenerate it"
                )
            self.n_frames, self.n_particles = self._positions.shape[:2]
            self.masses = particles["mass"][()]
            species = particles["species"]
            self.types = species[()]
            self.type_names = [_as_str(name) for name in species.attrs.get("type_names", [])]
            self._boxes = _read_boxes(particles, self.n_frames, self.path)
            self._times = _read_times(particles["position"], self.n_frames, self.path)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> H5MDReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def read(self, start: int = 0, stop: int | None = None) -> Frames:
        """Frames ``start:stop`` (all by default)."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        return Frames(
            positions=self._positions[start:stop],
            forces=self._forces[start:stop],
            boxes=self._boxes[start:stop],
            times=self._times[start:stop],
            masses=self.masses,
            types=self.types,
            type_names=self.type_names,
        )

    def take(self, indices: np.ndarray) -> Frames:
        """Frames at ``indices`` (any order, repeats allowed), read in one pass over the
        sorted distinct indices; a file truncated under the reader is an H5MDError."""
        indices = np.asarray(indices, dtype=np.int64)
        wanted, where = np.unique(indices, return_inverse=True)
        if len(wanted) and not 0 <= wanted[0] <= wanted[-1] < self.n_frames:
            raise IndexError(f"{self.path}: frames {wanted[[0, -1]]} not in 0..{self.n_frames - 1}")
        try:
            positions, forces = self._positions[wanted], self._forces[wanted]
        except (OSError, ValueError) as error:
            raise H5MDError(
                f"cannot read frames of {self.path} ({error}); the file is truncated or "
                "corrupt, regenerate it"
            ) from None
        return Frames(
            positions=positions[where],
            forces=forces[where],
            boxes=self._boxes[indices],
            times=self._times[indices],
            masses=self.masses,
            types=self.types,
            type_names=self.type_names,
        )

    def chunks(self, max_frames: int) -> Iterator[Frames]:
        """All frames in order, at most ``max_frames`` at a time."""
        for start in range(0, self.n_frames, max(1, max_frames)):
            yield self.read(start, start + max_frames)


def read_h5md_config(path: str | Path) -> dict[str, Any]:
    """Return the configuration stored by :func:`write_h5md` (empty if none was stored)."""
    path = Path(path)
    with _open(path) as f:
        raw = f["parameters"].attrs.get("cgkd_config") if "parameters" in f else None
    if raw is None:
        return {}
    try:
        return json.loads(_as_str(raw))
    except json.JSONDecodeError as err:
        raise H5MDError(f"H5MD file {path} has unreadable /parameters cgkd_config: {err}") from None


def read_h5md_constraints(path: str | Path) -> np.ndarray | None:
    """The ``[K, 2]`` constrained particle pairs stored in ``path``; ``None`` when the file has no
    constraint record at all (e.g. imported data), as opposed to a record of no constraints."""
    return _read_pairs(path, "constraints")


def read_h5md_bonds(path: str | Path) -> np.ndarray:
    """The ``[K, 2]`` bonded particle pairs stored in ``path`` (none when it has no record)."""
    pairs = _read_pairs(path, "bonds")
    return np.zeros((0, 2), dtype=np.int64) if pairs is None else pairs


def _read_pairs(path: str | Path, name: str) -> np.ndarray | None:
    with _open(Path(path)) as f:
        if f"connectivity/{name}" not in f:
            return None
        return f[f"connectivity/{name}"][()].astype(np.int64).reshape(-1, 2)


def _write_metadata(f: h5py.File) -> None:
    h5md = f.create_group("h5md")
    h5md.attrs["version"] = np.array([1, 1], dtype=np.int32)
    h5md.create_group("author").attrs["name"] = _user_name()
    creator = h5md.create_group("creator")
    creator.attrs["name"] = "cgkd"
    creator.attrs["version"] = __version__


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_steps(steps: np.ndarray | None, n_frames: int, path: Path) -> np.ndarray:
    if steps is None:
        return np.arange(n_frames, dtype=np.int64)
    values = np.asarray(steps)
    if values.shape != (n_frames,) or (values.size and not np.issubdtype(values.dtype, np.integer)):
        raise H5MDError(
            f"steps for {path} must be {n_frames} integers (one per frame), "
            f"got shape {values.shape} dtype {values.dtype}"
        )
    return values.astype(np.int64)


def _check_pairs(given: np.ndarray, name: str, n_particles: int, path: Path) -> np.ndarray:
    pairs = np.asarray(given)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise H5MDError(
            f"{name} for {path} must be an integer [K, 2] array of particle pairs, "
            f"got shape {pairs.shape} dtype {pairs.dtype}"
        )
    if pairs.min() < 0 or pairs.max() >= n_particles:
        raise H5MDError(
            f"{name} for {path} index particles {pairs.min()}..{pairs.max()}, "
            f"but there are only {n_particles}"
        )
    return pairs.astype(np.int64)


def _config_to_json(config: dict[str, Any] | None, path: Path) -> str:
    def fallback(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, np.generic | np.ndarray):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} value {value!r}")

    try:
        return json.dumps(config or {}, sort_keys=True, default=fallback)
    except (TypeError, ValueError) as err:
        raise H5MDError(f"config for {path} is not JSON-serialisable: {err}") from None


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise H5MDError(f"H5MD file {path} does not exist; check the path or generate it first")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise H5MDError(f"{path} is not a readable HDF5 file ({err}); regenerate it") from None
    if "h5md" not in f or "particles" not in f:
        f.close()
        raise H5MDError(f"{path} is not an H5MD file (no /h5md or /particles group)")
    return f


def _particle_group(f: h5py.File, group: str, path: Path) -> h5py.Group:
    if group not in f["particles"]:
        found = sorted(f["particles"])
        raise H5MDError(f"H5MD file {path} has no particle group {group!r}; it has {found}")
    return f["particles"][group]


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_unit(dataset: h5py.Dataset, unit: str, path: Path) -> None:
    """Raise unless ``dataset`` has no unit attribute or exactly ``unit``."""
    found = dataset.attrs.get("unit")
    if found is not None and _as_str(found) != unit:
        raise H5MDError(
            f"{path}: {dataset.name} is in {_as_str(found)!r}, cgkd needs {unit!r}; "
            "load it with cgkd.io.trajectory.load_trajectory, which converts units"
        )


def _read_times(element: h5py.Group, n_frames: int, path: Path) -> np.ndarray:
    if "time" not in element:
        raise H5MDError(f"H5MD file {path} has no {element.name}/time")
    time = element["time"]
    _check_unit(time, TIME_UNIT, path)
    if time.ndim == 0:  # H5MD 1.1 fixed interval: time = offset + interval * frame
        return float(time.attrs.get("offset", 0.0)) + float(time[()]) * np.arange(n_frames)
    return time[()]


def _read_boxes(particles: h5py.Group, n_frames: int, path: Path) -> np.ndarray:
    if "box/edges" not in particles:
        raise H5MDError(f"H5MD file {path} has no periodic box ({particles.name}/box/edges)")
    edges = particles["box/edges"]
    value = edges["value"] if isinstance(edges, h5py.Group) else edges
    _check_unit(value, LENGTH_UNIT, path)
    data = np.asarray(value[()], dtype=np.float64)
    if isinstance(edges, h5py.Dataset):  # time-independent box
        data = np.broadcast_to(data, (n_frames, *data.shape))
    if data.shape == (n_frames, 3):  # orthorhombic: edge lengths
        data = data[:, :, None] * np.eye(3)
    if data.shape != (n_frames, 3, 3):
        raise H5MDError(f"{path}: {value.name} has shape {data.shape}, expected [{n_frames}, 3, 3]")
    return data
