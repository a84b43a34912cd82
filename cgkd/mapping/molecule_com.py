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

from pathlib import Path
from typing import Any

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.exceptions import NoDataError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cgkd.io.frames import Frames
from cgkd.io.h5md import write_h5md
from cgkd.io.trajectory import load_trajectory

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


def map_molecules(universe: Universe, frames: Frames, *, bead_type: str = "residue") -> Frames:
    """Map atomistic ``frames`` to one bead per molecule of ``universe`` (see module docstring).

    ``bead_type="residue"`` names each bead species after the molecule's residue names (joined
    with "-" for multi-residue molecules); ``"single"`` gives every bead the species "CG".
    """
    if bead_type not in BEAD_TYPES:
        raise ValueError(f"bead_type {bead_type!r} is unknown; use one of {list(BEAD_TYPES)}")
    if universe.atoms.n_atoms != frames.n_particles:
        raise ValueError(
            f"topology has {universe.atoms.n_atoms} atoms but frames have {frames.n_particles}; "
            "map frames with the topology they were loaded with"
        )
    labels = molecule_labels(universe)
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
    first_atom = order[starts]
    bead_masses = np.add.reduceat(frames.masses[order], starts)
    if np.any(bead_masses <= 0):
        bad = int(np.flatnonzero(bead_masses <= 0)[0])
        raise ValueError(
            f"molecule {bad} (first atom {first_atom[bad]}) has zero total mass; "
            "use a topology with atom masses"
        )
    weights = frames.masses[order] / np.repeat(bead_masses, np.diff(np.r_[starts, len(order)]))

    n_beads = len(starts)
    positions = np.empty((frames.n_frames, n_beads, 3))
    forces = np.empty((frames.n_frames, n_beads, 3))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, frames.n_particles))
    reference = first_atom[labels[order]]
    for lo in range(0, frames.n_frames, chunk):
        hi = min(lo + chunk, frames.n_frames)
        boxes = frames.boxes[lo:hi]
        inverse = np.linalg.inv(boxes)
        x = frames.positions[lo:hi][:, order]
        origin = frames.positions[lo:hi][:, reference]
        offset = (x - origin) @ inverse
        whole = x - np.round(offset) @ boxes
        com = np.add.reduceat(whole * weights[None, :, None], starts, axis=1)
        positions[lo:hi] = _wrap(com, boxes, inverse)
        forces[lo:hi] = np.add.reduceat(frames.forces[lo:hi][:, order], starts, axis=1)

    names = _bead_names(universe, first_atom, labels, bead_type)
    type_names = sorted(set(names))
    return Frames(
        positions=positions,
        forces=forces,
        boxes=frames.boxes.copy(),
        times=frames.times.copy(),
        masses=bead_masses,
        types=np.searchsorted(type_names, names),
        type_names=type_names,
    )


def map_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    out_path: str | Path,
    *,
    config: dict[str, Any] | None = None,
) -> Frames:
    """Map an atomistic trajectory with forces to molecule beads and write it as H5MD.

    The CG data set goes to particle group "all" of ``out_path`` (the same group name as
    atomistic files, so ``read_h5md(out_path)`` reads it), with bead masses and species names.
    The stored config is ``config`` plus a ``"source"`` entry (scheme and input files).
    """
    universe, frames = load_trajectory(topology, trajectory)
    beads = map_molecules(universe, frames)
    stored: dict[str, Any] = {
        "source": {
            "scheme": "molecule_com",
            "topology": str(topology),
            "trajectory": str(trajectory),
        }
    }
    stored.update(config or {})
    write_h5md(out_path, beads, config=stored)
    return beads


def _wrap(points: np.ndarray, boxes: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Wrap ``[t, n, 3]`` points into the boxes ``[t, 3, 3]`` (fractional coordinates in [0, 1))."""
    fractional = points @ inverse
    fractional -= np.floor(fractional)
    fractional[fractional >= 1.0] = 0.0
    return fractional @ boxes


def _bead_names(
    universe: Universe, first_atom: np.ndarray, labels: np.ndarray, bead_type: str
) -> list[str]:
    """Species name of each bead."""
    if bead_type == "single":
        return [SINGLE_TYPE_NAME] * len(first_atom)
    resnames = universe.atoms.resnames
    pairs, first = np.unique(
        np.stack([labels, universe.atoms.resindices], axis=1), axis=0, return_index=True
    )
    residues: list[list[str]] = [[] for _ in first_atom]
    for (label, _), atom in zip(pairs, first, strict=True):
        residues[label].append(str(resnames[atom]))
    return ["-".join(names) for names in residues]
