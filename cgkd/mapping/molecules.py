"""Molecules of a topology and the anchor atom that makes each whole across the periodic
boundary (:func:`cgkd.geometry.make_whole`).

A molecule is a connected set of atoms, linking atoms that are bonded or share a residue (so
topologies without bonds, e.g. OpenMM's PDB files of water, still have molecules).
"""

from __future__ import annotations

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.exceptions import NoDataError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def atom_bonds(universe: Universe) -> np.ndarray:
    """``[M, 2]`` covalent bonds of the topology (none if it has no bond information)."""
    try:
        return np.asarray(universe.atoms.bonds.indices, dtype=np.int64).reshape(-1, 2)
    except NoDataError:
        return np.zeros((0, 2), dtype=np.int64)


def molecule_labels(universe: Universe) -> np.ndarray:
    """Molecule index ``[N]`` of each atom, numbered in order of each molecule's first atom."""
    n_atoms = universe.atoms.n_atoms
    bonds = atom_bonds(universe)
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


def reference_atoms(labels: np.ndarray) -> np.ndarray:
    """``[N]`` index of the first atom of each atom's molecule (the anchor for making it whole)."""
    first = np.full(labels.max() + 1, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    return first[labels]
