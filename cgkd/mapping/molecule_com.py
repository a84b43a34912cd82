"""The default CG mapping: one bead per molecule at its centre of mass.

A molecule is a connected set of atoms, linking atoms that are bonded or share a residue (so
topologies without bonds, e.g. OpenMM's PDB files of water, map per residue). Per frame each
molecule is made whole across the periodic boundary (every atom is moved to its minimum image
relative to the molecule's first atom, in fractional coordinates, so triclinic boxes work),
its centre of mass is the bead position (then wrapped into the box), and the bead force is the
sum of the atomic forces.

The summed force is the mapped force of the basic force map. That is valid for this mapping
because beads do not overlap (each atom belongs to one bead) and constraints never cross a bead
boundary: for rigid water the constraint forces act within one molecule, are equal and opposite,
and cancel in the sum, so the forces from ``State.getForces`` (which exclude constraint forces)
give the correct mapped forces.

Units: nm, kJ/mol/nm, ps, amu, as everywhere in cgkd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.exceptions import NoDataError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader, H5MDWriter

#: How bead species are named: by the molecule's residue names, or one species for all beads.
BEAD_TYPES = ("residue", "single")

#: Name of the only species when ``bead_type="single"``.
SINGLE_TYPE_NAME = "CG"

#: Frames x atoms processed at once, to bound temporary memory (~100 MB).
_CHUNK_ELEMENTS = 2_000_000


def molecule_labels(universe: Universe) -> np.ndarray:
    """Molecule index ``[N]`` of each atom, numbered in order of each molecule's first atom."""
    n_atoms = universe.atoms.n_atoms
    try:
        bonds = np.asarray(universe.atoms.bonds.indices, dtype=np.int64).reshape(-1, 2)
    except NoDataError:
        bonds = np.zeros((0, 2), dtype=np.int64)
    resindices = universe.atoms.resindices
    order = np.argsort(resindices, kind="stable")
    same = resindices[order[1:]] == resindices[order[:-1]]
    edges = np.concatenate([bonds, np.stack([order[:-1][same], order[1:][same]], axis=1)])
    graph = coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_atoms, n_atoms)
    ).tocsr()
    _, labels = connected_components(graph, directed=False)
    first_atom = np.full(labels.max() + 1, n_atoms)
    np.minimum.at(first_atom, labels, np.arange(n_atoms))
    rank = np.empty_like(first_atom)
    rank[np.argsort(first_atom)] = np.arange(len(first_atom))
    return rank[labels]


@dataclass(frozen=True, eq=False)
class MoleculeMap:
    """The compiled one-bead-per-molecule map of a topology (see the module docstring).

    Atoms are ordered by molecule (``order``); molecule ``i`` spans ``order[starts[i]:]`` up to
    the next start. ``weights`` are the atoms' mass fractions of their molecule, in that order.
    """

    order: np.ndarray
    starts: np.ndarray
    weights: np.ndarray
    reference: np.ndarray
    masses: np.ndarray
    types: np.ndarray
    type_names: list[str]

    @classmethod
    def from_universe(
        cls,
        universe: Universe,
        masses: np.ndarray,
        *,
        bead_type: str = "residue",
        residue_names: np.ndarray | None = None,
    ) -> MoleculeMap:
        """Compile the map of ``universe``'s molecules with atom ``masses`` (amu).

        ``bead_type="residue"`` names each bead species after the molecule's residue names
        (joined with "-" for multi-residue molecules); ``"single"`` gives every bead "CG".
        ``residue_names`` (one per atom) replace the topology's, e.g. the species of an H5MD
        file, whose names are not cut to the 3 characters MDAnalysis reads from a PDB.
        """
        if bead_type not in BEAD_TYPES:
            raise ValueError(f"bead_type {bead_type!r} is unknown; use one of {list(BEAD_TYPES)}")
        if universe.atoms.n_atoms != len(masses):
            raise ValueError(
                f"topology has {universe.atoms.n_atoms} atoms but the frames have {len(masses)}; "
                "map frames with the topology they were made with"
            )
        labels = molecule_labels(universe)
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
        first_atom = order[starts]
        bead_masses = np.add.reduceat(masses[order], starts)
        if np.any(bead_masses <= 0):
            bad = int(np.flatnonzero(bead_masses <= 0)[0])
            raise ValueError(
                f"molecule {bad} (first atom {first_atom[bad]}) has zero total mass; "
                "use a topology with atom masses"
            )
        weights = masses[order] / np.repeat(bead_masses, np.diff(np.r_[starts, len(order)]))
        if residue_names is None:
            residue_names = universe.atoms.resnames
        names = _bead_names(universe, residue_names, first_atom, labels, bead_type)
        type_names = sorted(set(names))
        return cls(
            order=order,
            starts=starts,
            weights=weights,
            reference=first_atom[labels[order]],
            masses=bead_masses,
            types=np.searchsorted(type_names, names),
            type_names=type_names,
        )

    @property
    def n_beads(self) -> int:
        """Number of beads (molecules)."""
        return len(self.starts)

    def apply(self, frames: Frames) -> Frames:
        """Bead positions (COM, wrapped into the box) and summed forces of atomistic ``frames``."""
        if frames.n_particles != len(self.order):
            raise ValueError(
                f"frames have {frames.n_particles} atoms but the map was built for "
                f"{len(self.order)}; map frames with the topology they were made with"
            )
        positions = np.empty((frames.n_frames, self.n_beads, 3))
        forces = np.empty((frames.n_frames, self.n_beads, 3))
        chunk = max(1, _CHUNK_ELEMENTS // max(1, frames.n_particles))
        for lo in range(0, frames.n_frames, chunk):
            hi = min(lo + chunk, frames.n_frames)
            boxes = frames.boxes[lo:hi]
            inverse = np.linalg.inv(boxes)
            x = frames.positions[lo:hi][:, self.order]
            origin = frames.positions[lo:hi][:, self.reference]
            offset = (x - origin) @ inverse
            whole = x - np.round(offset) @ boxes
            com = np.add.reduceat(whole * self.weights[None, :, None], self.starts, axis=1)
            positions[lo:hi] = _wrap(com, boxes, inverse)
            forces[lo:hi] = np.add.reduceat(
                frames.forces[lo:hi][:, self.order], self.starts, axis=1
            )
        return Frames(
            positions=positions,
            forces=forces,
            boxes=frames.boxes.copy(),
            times=frames.times.copy(),
            masses=self.masses,
            types=self.types,
            type_names=self.type_names,
        )


@dataclass(frozen=True)
class MappedDataset:
    """A CG data set written by :func:`map_trajectory`."""

    path: Path
    n_frames: int
    n_beads: int
    type_names: list[str]


def map_molecules(universe: Universe, frames: Frames, *, bead_type: str = "residue") -> Frames:
    """Map atomistic ``frames`` to one bead per molecule of ``universe`` (see module docstring)."""
    return MoleculeMap.from_universe(universe, frames.masses, bead_type=bead_type).apply(frames)


def map_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    out_path: str | Path,
    *,
    config: dict[str, Any] | None = None,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> MappedDataset:
    """Map an atomistic H5MD data set to molecule beads, streaming it chunk by chunk into H5MD.

    ``topology`` gives residues and bonds; masses come from the H5MD file. The CG data set goes
    to particle group "all" of ``out_path`` with bead masses and species names; the stored
    config is ``config`` plus a ``"source"`` entry (scheme and input files). Memory is bounded
    by ``chunk_frames`` (default: about 2e6 atom-frames at a time).
    """
    try:
        universe = Universe(str(topology))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"cannot read topology {topology}: {err}") from None
    stored: dict[str, Any] = {
        "source": {
            "scheme": "molecule_com",
            "topology": str(topology),
            "trajectory": str(trajectory),
        }
    }
    stored.update(config or {})
    with H5MDReader(trajectory) as reader:
        species = np.asarray(reader.type_names)[reader.types] if reader.type_names else None
        operator = MoleculeMap.from_universe(universe, reader.masses, residue_names=species)
        chunk = chunk_frames or max(1, _CHUNK_ELEMENTS // max(1, reader.n_particles))
        with (
            H5MDWriter(
                out_path,
                masses=operator.masses,
                types=operator.types,
                type_names=operator.type_names,
                config=stored,
            ) as writer,
            tqdm(total=reader.n_frames, desc="map", unit="frame", disable=not progress) as bar,
        ):
            for frames in reader.chunks(chunk):
                writer.append(operator.apply(frames))
                bar.update(frames.n_frames)
    return MappedDataset(Path(out_path), writer.n_frames, operator.n_beads, operator.type_names)


def _wrap(points: np.ndarray, boxes: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Wrap ``[t, n, 3]`` points into the boxes ``[t, 3, 3]`` (fractional coordinates in [0, 1))."""
    fractional = points @ inverse
    fractional -= np.floor(fractional)
    fractional[fractional >= 1.0] = 0.0
    return fractional @ boxes


def _bead_names(
    universe: Universe,
    resnames: np.ndarray,
    first_atom: np.ndarray,
    labels: np.ndarray,
    bead_type: str,
) -> list[str]:
    """Species name of each bead."""
    if bead_type == "single":
        return [SINGLE_TYPE_NAME] * len(first_atom)
    pairs, first = np.unique(
        np.stack([labels, universe.atoms.resindices], axis=1), axis=0, return_index=True
    )
    residues: list[list[str]] = [[] for _ in first_atom]
    for (label, _), atom in zip(pairs, first, strict=True):
        residues[label].append(str(resnames[atom]))
    return ["-".join(names) for names in residues]
