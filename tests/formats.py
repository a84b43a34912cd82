"""Writers of all-atom test trajectories with forces, in the formats cgkd reads through MDAnalysis.

Every writer takes a :class:`~cgkd.io.frames.Frames` in cgkd's units (nm, kJ/mol/nm, ps) and stores
it in the file format's own units, so a correct reader must convert back to the original values
(within float32 precision: every format here stores single precision, or text read as float32):

- :func:`write_trr`: GROMACS TRR via MDAnalysis, nm, kJ/(mol nm), ps.
- :func:`write_h5md_mda`: H5MD via MDAnalysis, units chosen (default Angstrom,
  kcal/(mol Angstrom), fs) and named in MDAnalysis's H5MD ``unit`` attributes.
- :func:`write_netcdf`: AMBER NetCDF via MDAnalysis, Angstrom, kcal/(mol Angstrom), ps.
- :func:`write_lammps_dump`: LAMMPS text dump written by hand, ``real`` (Angstrom,
  kcal/(mol Angstrom), fs) or ``metal`` (Angstrom, eV/Angstrom, ps) units.

Topologies: :func:`write_topology_pdb` writes a PDB (residues of ``atoms_per_residue`` atoms named
after ``type_names``, elements guessed from the masses) that MDAnalysis pairs with all of the above.
Use the masses of :data:`ELEMENT_MASSES` (MDAnalysis's own table) for masses that survive a PDB.

MDAnalysis's LAMMPS dump reader does not convert units (its ``units`` are all ``None``): it
returns the dump's numbers as they are, and times as ``step * dt`` with ``dt`` from the
``Universe(..., dt=...)`` keyword (1.0 by default). A reader of LAMMPS dumps must convert
forces from kcal/(mol Angstrom) (``real``) or eV/Angstrom (``metal``) and scale time itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import MDAnalysis
import numpy as np
from MDAnalysis.coordinates.base import WriterBase
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysis.lib.mdamath import triclinic_box

from cgkd.io.frames import Frames

#: kJ per kcal (thermochemical calorie), as in MDAnalysis's force units.
KJ_PER_KCAL = 4.184
#: kJ/mol per eV (CODATA 2018 exact: e * N_A / 1000), as LAMMPS ``metal`` units use.
KJ_PER_MOL_PER_EV = 1.602176634e-19 * 6.02214076e23 / 1000.0
ANGSTROM_PER_NM = 10.0

#: LAMMPS unit style -> (kJ/mol/nm per dump force unit, ps per dump time unit, default timestep).
#: Lengths are Angstrom in both. Default timesteps are LAMMPS's (real: 1 fs, metal: 0.001 ps).
LAMMPS_UNITS: dict[str, tuple[float, float, float]] = {
    "real": (KJ_PER_KCAL * ANGSTROM_PER_NM, 1e-3, 1.0),
    "metal": (KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM, 1.0, 0.001),
}

#: Element masses (amu) exactly as MDAnalysis guesses them from a PDB's element column.
ELEMENT_MASSES: dict[str, float] = {
    "H": 1.008,
    "C": 12.011,
    "N": 14.007,
    "O": 15.999,
    "NA": 22.98977,
    "P": 30.974,
    "S": 32.06,
    "CL": 35.45,
}

# MDAnalysis's own units (Angstrom, ps, kJ/(mol Angstrom)) of the in-memory universe we write from.
_MDA_UNITS = {
    "time": "ps",
    "length": "Angstrom",
    "velocity": "Angstrom/ps",
    "force": "kJ/(mol*Angstrom)",
}

# Per-atom PDB fields MDAnalysis's PDB writer otherwise fills in with a warning each.
_PDB_DEFAULTS = {
    "occupancies": 1.0,
    "tempfactors": 0.0,
    "record_types": "ATOM",
    "formalcharges": 0,
    "altLocs": "",
}


def make_frames(
    n_frames: int = 4,
    n_atoms: int = 9,
    seed: int = 0,
    *,
    triclinic: bool = False,
    type_names: tuple[str, ...] = ("HOH",),
) -> Frames:
    """Random water-like test frames: ``n_atoms / 3`` residues of O, H, H.

    Boxes are about 2 nm and differ slightly per frame (orthorhombic, or lower-triangular with
    ``triclinic``: a along x, b in the xy plane, as MDAnalysis and LAMMPS orient them); oxygens lie
    inside the box with hydrogens 0.1 nm away; forces are normal with a 300 kJ/mol/nm spread;
    times are 0, 0.5, 1.0, ... ps; masses are :data:`ELEMENT_MASSES` of O, H, H. Residue ``r``
    has species ``r % len(type_names)`` (all three of its atoms); give ``type_names`` sorted
    for them to match a reader that sorts the residue names it finds.
    """
    if n_atoms <= 0 or n_atoms % 3:
        raise ValueError(f"n_atoms must be a positive multiple of 3 (O, H, H), got {n_atoms}")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    rng = np.random.default_rng(seed)
    n_residues = n_atoms // 3
    edges = np.array([2.0, 2.1, 2.2]) * (1.0 + 0.01 * rng.standard_normal((n_frames, 3)))
    boxes = np.zeros((n_frames, 3, 3))
    boxes[:, [0, 1, 2], [0, 1, 2]] = edges
    if triclinic:
        boxes[:, 1, 0] = 0.3  # b_x
        boxes[:, 2, 0] = -0.2  # c_x
        boxes[:, 2, 1] = 0.25  # c_y
    fractional = rng.uniform(0.0, 1.0, (n_frames, n_residues, 3))
    oxygens = np.einsum("tri,tij->trj", fractional, boxes)
    bonds = rng.standard_normal((n_frames, n_residues, 2, 3))
    bonds *= 0.1 / np.linalg.norm(bonds, axis=-1, keepdims=True)
    positions = np.concatenate([oxygens[:, :, None], oxygens[:, :, None] + bonds], axis=2)
    return Frames(
        positions=positions.reshape(n_frames, n_atoms, 3),
        forces=rng.normal(0.0, 300.0, (n_frames, n_atoms, 3)),
        boxes=boxes,
        times=0.5 * np.arange(n_frames),
        masses=np.tile([ELEMENT_MASSES["O"], ELEMENT_MASSES["H"], ELEMENT_MASSES["H"]], n_residues),
        types=np.repeat(np.arange(n_residues) % len(type_names), 3),
        type_names=list(type_names),
    )


def element_of_mass(mass: float) -> str:
    """The element of :data:`ELEMENT_MASSES` whose mass is nearest ``mass`` (amu)."""
    return min(ELEMENT_MASSES, key=lambda element: abs(ELEMENT_MASSES[element] - mass))


def dimensions(box: np.ndarray) -> np.ndarray:
    """MDAnalysis ``[A, B, C, alpha, beta, gamma]`` (Angstrom, degrees) of a ``[3, 3]`` nm box."""
    return np.asarray(triclinic_box(*(np.asarray(box, dtype=np.float64) * ANGSTROM_PER_NM)))


def empty_universe(n_atoms: int, atoms_per_residue: int) -> MDAnalysis.Universe:
    """An MDAnalysis universe of ``n_atoms`` in residues of ``atoms_per_residue``, with a
    one-frame trajectory and no attributes yet."""
    n_residues = n_atoms // atoms_per_residue
    return MDAnalysis.Universe.empty(
        n_atoms,
        n_residues=n_residues,
        atom_resindex=np.repeat(np.arange(n_residues), atoms_per_residue),
        trajectory=True,
    )


def write_topology_pdb(path: str | Path, frames: Frames, *, atoms_per_residue: int = 3) -> Path:
    """Write a PDB topology of ``frames`` (first frame's positions and box) with MDAnalysis.

    Consecutive blocks of ``atoms_per_residue`` atoms form residues named
    ``type_names[types[atom]]`` (all atoms of a residue must share a species); atoms are named
    after the element nearest their mass (``O``, ``H1``, ``H2``, ...) and the element column is
    set, so MDAnalysis guesses the masses of :data:`ELEMENT_MASSES` back.
    """
    path = Path(path)
    n_atoms = frames.n_particles
    if atoms_per_residue <= 0 or n_atoms % atoms_per_residue:
        raise ValueError(f"{n_atoms} atoms do not split into residues of {atoms_per_residue}")
    n_residues = n_atoms // atoms_per_residue
    residue_types = frames.types.reshape(n_residues, atoms_per_residue)
    if np.any(residue_types != residue_types[:, :1]):
        raise ValueError("all atoms of a residue must have the same type (species)")
    elements = [element_of_mass(mass) for mass in frames.masses]
    names = []
    for start in range(0, n_atoms, atoms_per_residue):
        residue = elements[start : start + atoms_per_residue]
        for k, element in enumerate(residue):
            repeated = residue.count(element) > 1
            names.append(f"{element}{residue[:k].count(element) + 1}" if repeated else element)
    universe = empty_universe(n_atoms, atoms_per_residue)
    universe.add_TopologyAttr("names", names)
    universe.add_TopologyAttr("elements", elements)
    universe.add_TopologyAttr("types", elements)
    universe.add_TopologyAttr("resnames", [frames.type_names[t] for t in residue_types[:, 0]])
    universe.add_TopologyAttr("resids", np.arange(1, n_residues + 1))
    universe.add_TopologyAttr("chainIDs", ["A"] * n_atoms)
    for attr, value in _PDB_DEFAULTS.items():  # spares the PDB writer's "no information" warnings
        universe.add_TopologyAttr(attr, [value] * n_atoms)
    universe.add_TopologyAttr("icodes", [""] * n_residues)
    universe.add_TopologyAttr("segids", [""])
    universe.atoms.positions = frames.positions[0] * ANGSTROM_PER_NM
    universe.dimensions = dimensions(frames.boxes[0])
    universe.atoms.write(str(path))
    return path


def _memory_universe(frames: Frames) -> MDAnalysis.Universe:
    """A topology-less universe whose in-memory trajectory holds ``frames`` in MDAnalysis units."""
    universe = MDAnalysis.Universe.empty(frames.n_particles, trajectory=False)
    universe.load_new(
        (frames.positions * ANGSTROM_PER_NM).astype(np.float32),
        format=MemoryReader,
        order="fac",
        dimensions=np.array([dimensions(box) for box in frames.boxes]),
        forces=(frames.forces / ANGSTROM_PER_NM).astype(np.float32),
    )
    universe.trajectory.units = dict(_MDA_UNITS)
    return universe


def _write_with(writer: WriterBase, frames: Frames, steps: np.ndarray | None = None) -> None:
    """Write every frame of ``frames`` through an MDAnalysis ``writer`` (then closed).

    Times are the frames' times; integration steps are ``steps`` (default: the frame index).
    """
    universe = _memory_universe(frames)
    step_values = np.arange(frames.n_frames) if steps is None else np.asarray(steps)
    if step_values.shape != (frames.n_frames,):
        raise ValueError(f"steps must have shape [{frames.n_frames}], got {step_values.shape}")
    with writer:
        for i, ts in enumerate(universe.trajectory):
            ts.time = float(frames.times[i])
            ts.data["step"] = int(step_values[i])
            writer.write(universe.atoms)


def write_trr(path: str | Path, frames: Frames, *, steps: np.ndarray | None = None) -> Path:
    """Write ``frames`` as a GROMACS TRR (nm, kJ/(mol nm), ps) with MDAnalysis's TRRWriter.

    ``steps`` are the integration step of each frame (default: the frame index).
    """
    path = Path(path)
    writer = MDAnalysis.Writer(str(path), n_atoms=frames.n_particles, format="TRR")
    _write_with(writer, frames, steps)
    return path


def write_h5md_mda(
    path: str | Path,
    frames: Frames,
    *,
    length_unit: str = "Angstrom",
    force_unit: str = "kcal/(mol*Angstrom)",
    time_unit: str = "fs",
) -> Path:
    """Write ``frames`` as H5MD with MDAnalysis's H5MDWriter, in the given MDAnalysis units.

    Units are MDAnalysis spellings (``"nm"``, ``"kJ/(mol*nm)"``, ``"ps"``, ...); the writer
    stores H5MD spellings such as ``"kcal mol-1 Angstrom-1"`` in the ``unit`` attributes. Use a
    ``.h5md`` suffix for MDAnalysis to recognise the file without ``format="H5MD"``.
    """
    path = Path(path)
    writer = MDAnalysis.Writer(
        str(path),
        n_atoms=frames.n_particles,
        format="H5MD",
        velocities=False,
        lengthunit=length_unit,
        forceunit=force_unit,
        timeunit=time_unit,
    )
    _write_with(writer, frames)
    return path


def write_netcdf(path: str | Path, frames: Frames) -> Path:
    """Write ``frames`` as AMBER NetCDF (Angstrom, kcal/(mol Angstrom), ps) with NCDFWriter."""
    path = Path(path)
    with warnings.catch_warnings():  # without the netCDF4 package it writes with scipy
        warnings.filterwarnings("ignore", "Could not find netCDF4 module", UserWarning)
        writer = MDAnalysis.Writer(
            str(path), n_atoms=frames.n_particles, format="NCDF", forces=True
        )
        _write_with(writer, frames)
    return path


def write_lammps_dump(
    path: str | Path,
    frames: Frames,
    units: str = "real",
    *,
    timestep: float | None = None,
    shuffle_seed: int | None = None,
) -> Path:
    """Write ``frames`` as a LAMMPS text dump ``id type x y z fx fy fz`` in real or metal units.

    ``timestep`` is the LAMMPS ``dt`` in the unit style's time unit (default LAMMPS's: 1 fs for
    ``real``, 0.001 ps for ``metal``); each frame's ``TIMESTEP`` is its time over ``dt``, which
    must be a whole number. Boxes start at the origin (``xlo = ylo = zlo = 0``, so MDAnalysis's
    shift of positions by the box origin is a no-op); lower-triangular boxes are written as
    LAMMPS triclinic ``xy xz yz`` bounds. ``type`` is the species index plus one. With
    ``shuffle_seed`` the atom lines of each frame are written in a random order (readers must
    sort by ``id``). Use a ``.lammpsdump`` suffix for MDAnalysis to recognise the format.
    """
    if units not in LAMMPS_UNITS:
        raise ValueError(f"LAMMPS units must be one of {sorted(LAMMPS_UNITS)}, got {units!r}")
    force_factor, ps_per_time_unit, default_dt = LAMMPS_UNITS[units]
    dt_ps = (default_dt if timestep is None else timestep) * ps_per_time_unit
    steps = frames.times / dt_ps
    if np.any(np.abs(steps - np.round(steps)) > 1e-6):
        raise ValueError(f"times {frames.times} ps are not whole multiples of dt = {dt_ps} ps")
    boxes = frames.boxes * ANGSTROM_PER_NM
    if np.any(np.abs(boxes[:, [0, 0, 1], [1, 2, 2]]) > 0):
        raise ValueError("LAMMPS boxes must be lower-triangular: a along x, b in the xy plane")
    triclinic = bool(np.any(boxes[:, [1, 2, 2], [0, 0, 1]] != 0))
    positions = frames.positions * ANGSTROM_PER_NM
    forces = frames.forces / force_factor
    order = np.arange(frames.n_particles)
    rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
    lines: list[str] = []
    for t in range(frames.n_frames):
        lines += ["ITEM: TIMESTEP", str(round(steps[t])), "ITEM: NUMBER OF ATOMS"]
        lines.append(str(frames.n_particles))
        (lx, _, _), (xy, ly, _), (xz, yz, lz) = boxes[t]
        if triclinic:
            lines.append("ITEM: BOX BOUNDS xy xz yz pp pp pp")
            x_low, x_high = min(0.0, xy, xz, xy + xz), lx + max(0.0, xy, xz, xy + xz)
            lines.append(f"{x_low:.17g} {x_high:.17g} {xy:.17g}")
            lines.append(f"{min(0.0, yz):.17g} {ly + max(0.0, yz):.17g} {xz:.17g}")
            lines.append(f"0.0 {lz:.17g} {yz:.17g}")
        else:
            lines.append("ITEM: BOX BOUNDS pp pp pp")
            lines += [f"0.0 {length:.17g}" for length in (lx, ly, lz)]
        lines.append("ITEM: ATOMS id type x y z fx fy fz")
        if rng is not None:
            order = rng.permutation(frames.n_particles)
        for i in order:
            values = " ".join(f"{v:.10g}" for v in (*positions[t, i], *forces[t, i]))
            lines.append(f"{i + 1} {frames.types[i] + 1} {values}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


#: Format name -> (writer of Frames, file suffix, load_trajectory options).
FORMATS = {
    "trr": (write_trr, ".trr", {}),
    "h5md": (write_h5md_mda, ".h5md", {}),
    "netcdf": (write_netcdf, ".nc", {}),
    "lammps-real": (
        lambda p, f: write_lammps_dump(p, f, "real"),
        ".lammpsdump",
        {"units": "lammps-real", "timestep": 1.0},
    ),
    "lammps-metal": (
        lambda p, f: write_lammps_dump(p, f, "metal", timestep=0.002),
        ".dump",
        {"units": "lammps-metal", "timestep": 0.002},
    ),
}
