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
    /parameters                   attribute cgkd_config = the run configuration as a JSON string

Unit attributes are variable-length strings spelled as MDAnalysis's H5MD reader expects, so
``MDAnalysis.Universe(topology, path)`` reads the file and converts to Angstrom and
kJ/(mol Angstrom) itself.
"""

from __future__ import annotations

import getpass
import json
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
) -> Path:
    """Write ``frames`` (nm, kJ/mol/nm, ps, amu) atomically as an H5MD 1.1 file; return the path.

    ``steps`` are the integration step of each frame (default: the frame index);
    ``constraints`` is a ``[K, 2]`` array of constrained particle index pairs;
    ``config`` is stored as JSON under ``/parameters``.
    """
    path = Path(path)
    if not group or "/" in group:
        raise H5MDError(f"H5MD particle group name {group!r} for {path} must be non-empty, no '/'")
    step_values = _check_steps(steps, frames.n_frames, path)
    pairs = _check_constraints(constraints, frames.n_particles, path)
    config_json = _config_to_json(config, path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_metadata(f)
        particles = f.create_group(f"particles/{group}")
        box = particles.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = ["periodic"] * 3
        edges = box.create_group("edges")
        step_ds = edges.create_dataset("step", data=step_values)
        time_ds = edges.create_dataset("time", data=frames.times)
        time_ds.attrs["unit"] = TIME_UNIT
        edges.create_dataset("value", data=frames.boxes).attrs["unit"] = LENGTH_UNIT
        for name, data, unit in (
            ("position", frames.positions, LENGTH_UNIT),
            ("force", frames.forces, FORCE_UNIT),
        ):
            element = particles.create_group(name)
            element["step"] = step_ds
            element["time"] = time_ds
            element.create_dataset("value", data=data).attrs["unit"] = unit
        particles.create_dataset("mass", data=frames.masses).attrs["unit"] = MASS_UNIT
        species = particles.create_dataset("species", data=frames.types)
        species.attrs["type_names"] = np.array(frames.type_names, dtype=h5py.string_dtype())
        if pairs is not None:
            dset = f.create_dataset("connectivity/constraints", data=pairs)
            dset.attrs["particles_group"] = particles.ref
        f.create_group("parameters").attrs["cgkd_config"] = config_json
    return path


def read_h5md(path: str | Path, group: str = "all") -> Frames:
    """Read positions (nm), forces (kJ/mol/nm), boxes, times, masses and species of ``group``."""
    path = Path(path)
    with _open(path) as f:
        particles = _particle_group(f, group, path)
        for name in ("position", "force", "mass", "species"):
            if name not in particles:
                hint = " (write forces with the trajectory)" if name == "force" else ""
                raise H5MDError(f"H5MD file {path} has no /particles/{group}/{name}{hint}")
        positions = _read_value(particles["position"], LENGTH_UNIT, path)
        forces = _read_value(particles["force"], FORCE_UNIT, path)
        n_frames = positions.shape[0]
        species = particles["species"]
        type_names = [_as_str(name) for name in species.attrs.get("type_names", [])]
        return Frames(
            positions=positions,
            forces=forces,
            boxes=_read_boxes(particles, n_frames, path),
            times=_read_times(particles["position"], n_frames, path),
            masses=particles["mass"][()],
            types=species[()],
            type_names=type_names,
        )


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


def read_h5md_constraints(path: str | Path) -> np.ndarray:
    """Return the ``[K, 2]`` constrained particle pairs stored in ``path`` (``K = 0`` if none)."""
    path = Path(path)
    with _open(path) as f:
        if "connectivity/constraints" not in f:
            return np.zeros((0, 2), dtype=np.int64)
        return f["connectivity/constraints"][()].astype(np.int64)


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


def _check_constraints(
    constraints: np.ndarray | None, n_particles: int, path: Path
) -> np.ndarray | None:
    if constraints is None:
        return None
    pairs = np.asarray(constraints)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise H5MDError(
            f"constraints for {path} must be an integer [K, 2] array of particle pairs, "
            f"got shape {pairs.shape} dtype {pairs.dtype}"
        )
    if pairs.min() < 0 or pairs.max() >= n_particles:
        raise H5MDError(
            f"constraints for {path} index particles {pairs.min()}..{pairs.max()}, "
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


def _read_value(element: h5py.Group, unit: str, path: Path) -> np.ndarray:
    value = element["value"]
    _check_unit(value, unit, path)
    return value[()]


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
