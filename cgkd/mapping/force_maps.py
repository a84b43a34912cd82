"""Force maps: how atomistic forces are aggregated into bead forces.

A linear CG mapping has a position map M (``[n_beads, n_atoms]``, rows summing to 1) and a force
map W of the same shape, so that bead forces are ``f_I = sum_i W[I, i] F_i`` (one scalar weight
per atom, shared by x, y, z). A force map estimates the mean force without bias when

1. ``W M^T = I`` (each bead's force sees its own position only), and
2. for each bead, W has equal weights on all atoms of a constraint group (atoms joined by
   holonomic constraints, e.g. X-H bonds or rigid water), so constraint forces, which are
   internal to the group, cancel.

Three maps are built here (Krämer et al. 2023, "Statistically optimal force aggregation for
coarse-graining molecular dynamics"):

- ``basic``: W[I, i] = 1 on the bead's atoms. Valid without overlap and without constraints
  that cross a bead boundary.
- ``constraint_aware``: the valid map closest to the basic one in the Frobenius norm.
- ``optimal``: the valid map of minimal mapped-force second moment, fitted on sample forces.

Both fitted maps are parametrised per constraint group g (``W[I, i] = w[I, g]`` for i in g).
With ``A[g, J] = sum_{i in g} M[J, i]`` the conditions read ``A^T w_I = e_I``, and each bead
solves ``min (w - c)^T P (w - c)`` subject to them, in closed form (KKT):
``w = c + P^-1 A (A^T P^-1 A)^-1 (e_I - A^T c)``. The problem splits into blocks: atoms and
beads connected through M and the constraints (and, for the optimal map, molecules). Blocks
with the same atom count, group structure and M pattern (e.g. 1000 identical cholines) form
one kind and share one solve (and, for the optimal map, one pooled fit), batched over kinds of
the same shape. Cost grows with (atoms x beads) per block, so blocks of a few hundred atoms
are cheap; one block of 10^5 atoms (all bonds constrained in a big protein) is not.

Units: forces in kJ/mol/nm; weights are dimensionless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

#: Names of the force maps :func:`build_force_map` knows.
FORCE_MAPS: tuple[str, ...] = ("basic", "constraint_aware", "optimal")

#: How far each row of a position map may sum from 1.
_ROW_SUM_ATOL = 1e-6


def apply_map(matrix: sparse.spmatrix, values: np.ndarray) -> np.ndarray:
    """``[T, B, 3]``: a ``[B, N]`` map applied to per-atom ``values [T, N, 3]`` (nm, kJ/mol/nm)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 3 or values.shape[1] != matrix.shape[1]:
        raise ValueError(
            f"values have shape {values.shape} but the map needs [T, {matrix.shape[1]}, 3]; "
            "pass per-atom values of every frame"
        )
    n_frames, n_atoms, width = values.shape
    flat = values.transpose(1, 0, 2).reshape(n_atoms, n_frames * width)
    mapped = np.asarray(matrix @ flat)
    return mapped.reshape(matrix.shape[0], n_frames, width).transpose(1, 0, 2)


def constraint_groups(n_atoms: int, constraints: np.ndarray) -> np.ndarray:
    """Constraint group ``[N]`` of each atom: connected components of the ``[K, 2]`` constraint
    pairs (unconstrained atoms are singletons), numbered in order of each group's first atom."""
    if n_atoms < 1:
        raise ValueError(f"n_atoms is {n_atoms}; pass the number of atoms of the topology (>= 1)")
    pairs = _constraint_pairs(constraints, n_atoms)
    graph = sparse.coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms)
    )
    _, labels = connected_components(graph, directed=False)
    return _first_atom_order(labels)


def crossing_constraints(position_map: sparse.spmatrix, constraints: np.ndarray) -> np.ndarray:
    """Indices of the constraints whose two atoms do not belong to exactly the same beads (atom i
    belongs to bead I when ``M[I, i] != 0``): those that make the basic force map biased."""
    members = _members(sparse.csc_matrix(position_map, dtype=np.float64))
    pairs = _constraint_pairs(constraints, members.shape[1])
    difference = members[:, pairs[:, 0]] - members[:, pairs[:, 1]]
    difference.eliminate_zeros()
    return np.flatnonzero(difference.getnnz(axis=0))


def basic_force_map(position_map: sparse.spmatrix) -> sparse.csr_matrix:
    """``W[I, i] = 1`` where ``M[I, i] != 0``: bead forces are sums of their atoms' forces.

    Valid only if no atom is in two beads (raises otherwise) and no constraint crosses a bead
    boundary (see :func:`crossing_constraints`; not checked here).
    """
    members = _members(_check_position_map(position_map))
    shared = np.flatnonzero(members.getnnz(axis=0) > 1)
    if len(shared):
        beads = members[:, shared[0]].nonzero()[0].tolist()
        raise ValueError(
            f"atom {shared[0]} belongs to beads {beads}, so the basic force map is invalid; "
            "use the constraint_aware or optimal force map for overlapping beads"
        )
    return members.tocsr()


def constraint_aware_force_map(
    position_map: sparse.spmatrix, constraints: np.ndarray
) -> sparse.csr_matrix:
    """The valid force map closest to the basic one, ``min ||W - W_basic||_F``.

    Per bead, ``P = diag(group sizes)`` and ``c`` = the group means of the basic weights (1 on
    the bead's atoms; this also covers overlapping beads). Blocks the basic map already serves
    (no crossing constraint, no overlap) keep the basic weights exactly.
    """
    position_map = _check_position_map(position_map)
    groups = constraint_groups(position_map.shape[1], constraints)
    pairs = _constraint_pairs(constraints, position_map.shape[1])

    def weights(kinds: _Kinds) -> np.ndarray:
        members = (kinds.position != 0).astype(np.float64)
        sizes = kinds.group_sum(np.ones_like(members[:, :1]))
        closest = kinds.group_sum(members) / sizes
        spread = _per_atom(closest, kinds.atom_group)
        solve = np.any(spread != members, axis=(1, 2))
        solve |= np.any(members.sum(axis=1) > 1, axis=1)
        result = members.copy()
        if np.any(solve):
            coupling = _check_solvable(kinds)[solve]
            fitted = _kkt(coupling, coupling / sizes[solve], closest[solve])
            result[solve] = _per_atom(fitted, kinds.atom_group[solve])
        return result

    return _assemble(position_map, _kinds(position_map, groups, pairs), weights)


def optimal_force_map(
    position_map: sparse.spmatrix,
    constraints: np.ndarray,
    forces: np.ndarray,
    molecules: np.ndarray,
    *,
    ridge: float = 1e-6,
) -> sparse.csr_matrix:
    """The valid force map of minimal mapped-force second moment on ``forces`` [T, N, 3]
    (kJ/mol/nm), each bead weighting only the atoms of its own molecule (``molecules``: [N]
    label per atom; molecules joined by a bead or a constraint are fitted together).

    Per bead, ``P = Q``, the second moment of the group forces ``F_g = sum_{i in g} F_i`` over
    frames, x, y, z and all molecules of the same kind, plus ``ridge * trace(Q) / n_groups``
    on the diagonal; ``c = 0``. Use many more samples (frames x molecules of a kind x 3) than
    groups per molecule, or the fit follows the noise of the sample.
    """
    position_map = _check_position_map(position_map)
    n_atoms = position_map.shape[1]
    forces = np.asarray(forces, dtype=np.float64)
    if forces.ndim != 3 or forces.shape[1:] != (n_atoms, 3) or len(forces) == 0:
        raise ValueError(
            f"forces have shape {forces.shape}; pass [T, {n_atoms}, 3] with T >= 1 frames"
        )
    if not np.all(np.isfinite(forces)):
        raise ValueError("forces contain NaN or inf; drop those frames before fitting")
    molecules = np.asarray(molecules)
    if molecules.shape != (n_atoms,):
        raise ValueError(
            f"molecules have shape {molecules.shape}; pass one molecule label per atom ({n_atoms})"
        )
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge is {ridge}; use a small non-negative number such as 1e-6")
    groups = constraint_groups(n_atoms, constraints)
    indicator = sparse.csr_matrix(
        (np.ones(n_atoms), (groups, np.arange(n_atoms))), shape=(groups.max() + 1, n_atoms)
    )
    group_forces = apply_map(indicator, forces)
    order = np.argsort(molecules, kind="stable")
    same = molecules[order[1:]] == molecules[order[:-1]]
    links = np.concatenate(
        [_constraint_pairs(constraints, n_atoms), np.stack([order[:-1], order[1:]], 1)[same]]
    )

    def weights(kinds: _Kinds) -> np.ndarray:
        n_members, n_groups = kinds.groups.shape
        samples = (
            group_forces[:, kinds.groups].transpose(1, 2, 0, 3).reshape(n_members, n_groups, -1)
        )
        moments = samples @ samples.transpose(0, 2, 1)
        by_kind = np.argsort(kinds.kind, kind="stable")
        counts = np.bincount(kinds.kind)
        second = np.add.reduceat(moments[by_kind], np.r_[0, np.cumsum(counts)[:-1]], axis=0)
        second /= (counts * samples.shape[2])[:, None, None]
        scale = np.trace(second, axis1=1, axis2=2) / n_groups
        second += ridge * scale[:, None, None] * np.eye(n_groups)
        coupling = _check_solvable(kinds)
        singular = np.linalg.matrix_rank(second, hermitian=True) < n_groups
        if np.any(singular):
            raise ValueError(
                f"the force second moment of the molecule kind of beads "
                f"{kinds.beads[_first_member(kinds, singular)].tolist()} is singular with "
                f"ridge={ridge}; check that its forces are not all zero, or raise ridge"
            )
        scaled = np.linalg.solve(second, coupling)
        fitted = _kkt(coupling, scaled, np.zeros_like(coupling))
        return _per_atom(fitted, kinds.atom_group)

    return _assemble(position_map, _kinds(position_map, groups, links), weights)


def force_map_violations(
    position_map: sparse.spmatrix,
    force_map: sparse.spmatrix,
    constraints: np.ndarray,
    *,
    atol: float = 1e-8,
) -> list[str]:
    """Why ``force_map`` is not a valid force map for ``position_map`` (empty when it is):
    ``W M^T`` differs from the identity, or a bead weights the atoms of a constraint unequally.
    """
    position = sparse.csr_matrix(position_map, dtype=np.float64)
    force = sparse.csc_matrix(force_map, dtype=np.float64)
    if force.shape != position.shape:
        return [f"force map has shape {force.shape} but the position map {position.shape}"]
    problems = []
    residual = abs(force @ position.T - sparse.identity(position.shape[0], format="csr")).tocoo()
    if residual.nnz and residual.data.max() > atol:
        worst = int(np.argmax(residual.data))
        bead, other = int(residual.row[worst]), int(residual.col[worst])
        problems.append(
            f"W M^T differs from the identity by {residual.data[worst]:.3g} at bead {bead}, "
            f"position of bead {other}"
        )
    pairs = _constraint_pairs(constraints, position.shape[1])
    difference = abs(force[:, pairs[:, 0]] - force[:, pairs[:, 1]]).tocoo()
    if difference.nnz and difference.data.max() > atol:
        worst = int(np.argmax(difference.data))
        index, bead = int(difference.col[worst]), int(difference.row[worst])
        i, j = pairs[index]
        problems.append(
            f"bead {bead} weights atoms {i} and {j} of constraint {index} unequally (by "
            f"{difference.data[worst]:.3g}), so constraint forces do not cancel"
        )
    return problems


def force_map_is_valid(
    position_map: sparse.spmatrix,
    force_map: sparse.spmatrix,
    constraints: np.ndarray,
    *,
    atol: float = 1e-8,
) -> bool:
    """Whether ``force_map`` is valid for ``position_map`` (see :func:`force_map_violations`)."""
    return not force_map_violations(position_map, force_map, constraints, atol=atol)


def build_force_map(
    kind: str,
    position_map: sparse.spmatrix,
    constraints: np.ndarray,
    *,
    forces: np.ndarray | None = None,
    molecules: np.ndarray | None = None,
    ridge: float = 1e-6,
) -> sparse.csr_matrix:
    """The ``kind`` force map (one of :data:`FORCE_MAPS`); ``forces`` [T, N, 3] (kJ/mol/nm),
    ``molecules`` and ``ridge`` are used by the optimal map only."""
    if kind == "basic":
        return basic_force_map(position_map)
    if kind == "constraint_aware":
        return constraint_aware_force_map(position_map, constraints)
    if kind == "optimal":
        if forces is None or molecules is None:
            raise ValueError(
                "the optimal force map is fitted on sample forces; pass forces [T, N, 3] and "
                "molecules [N]"
            )
        return optimal_force_map(position_map, constraints, forces, molecules, ridge=ridge)
    raise ValueError(f"force map {kind!r} is unknown; use one of {list(FORCE_MAPS)}")


@dataclass(frozen=True)
class _Kinds:
    """Blocks of one shape (n atoms, B beads, G groups), sorted into kinds u = 0..U-1.

    Member k of ``kind[k]`` has global ``atoms[k]`` [n], ``beads[k]`` [B] and ``groups[k]`` [G]
    in local order. Per kind: ``atom_group`` [U, n] (local group of each local atom) and
    ``position`` [U, B, n] (the position map restricted to the block).
    """

    atoms: np.ndarray
    beads: np.ndarray
    groups: np.ndarray
    kind: np.ndarray
    atom_group: np.ndarray
    position: np.ndarray

    def group_sum(self, per_atom: np.ndarray) -> np.ndarray:
        """[U, G, B] sums over each group's atoms of ``per_atom`` [U, B, n]."""
        n_kinds, n_beads, _ = per_atom.shape
        total = np.zeros((n_kinds, self.groups.shape[1], n_beads))
        kind = np.arange(n_kinds)[:, None]
        np.add.at(total, (kind, self.atom_group), per_atom.transpose(0, 2, 1))
        return total

    @property
    def coupling(self) -> np.ndarray:
        """A [U, G, B]: ``A[g, J] = sum_{i in g} M[J, i]``."""
        return self.group_sum(self.position)


def _check_solvable(kinds: _Kinds) -> np.ndarray:
    """A [U, G, B] of ``kinds``, after checking that each kind has a map with ``A^T W^T = I``."""
    coupling = kinds.coupling
    gram = coupling.transpose(0, 2, 1) @ coupling
    short = np.linalg.matrix_rank(gram, hermitian=True) < coupling.shape[2]
    if np.any(short):
        member = _first_member(kinds, short)
        raise ValueError(
            f"no force map satisfies W M^T = I for beads {kinds.beads[member].tolist()}: "
            "constraints tie their atoms together; merge those beads or drop the constraints"
        )
    return coupling


def _first_member(kinds: _Kinds, flagged: np.ndarray) -> int:
    """The first block whose kind is ``flagged`` ([U] booleans)."""
    return int(np.flatnonzero(flagged[kinds.kind])[0])


def _kkt(coupling: np.ndarray, scaled: np.ndarray, closest: np.ndarray) -> np.ndarray:
    """Group weights [U, G, B] minimising ``(w - c)^T P (w - c)`` with ``A^T w = e`` per bead,
    from ``A``, ``P^-1 A`` and ``c`` (all [U, G, B])."""
    transposed = coupling.transpose(0, 2, 1)
    residual = np.eye(coupling.shape[2]) - transposed @ closest
    return closest + scaled @ np.linalg.solve(transposed @ scaled, residual)


def _per_atom(group_weights: np.ndarray, atom_group: np.ndarray) -> np.ndarray:
    """[U, B, n] atom weights from group weights [U, G, B] and local groups [U, n]."""
    return np.take_along_axis(group_weights, atom_group[:, :, None], axis=1).transpose(0, 2, 1)


def _assemble(
    position_map: sparse.csr_matrix,
    all_kinds: list[_Kinds],
    weights: Callable[[_Kinds], np.ndarray],
) -> sparse.csr_matrix:
    """The force map with each kind's local atom weights ``weights(kinds)`` [U, B, n]."""
    rows, cols, values = [], [], []
    for kinds in all_kinds:
        local = weights(kinds)[kinds.kind]
        member, bead, atom = np.nonzero(local)
        rows.append(kinds.beads[member, bead])
        cols.append(kinds.atoms[member, atom])
        values.append(local[member, bead, atom])
    if not rows:
        return sparse.csr_matrix(position_map.shape)
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=position_map.shape,
    )


def _kinds(position_map: sparse.csr_matrix, groups: np.ndarray, links: np.ndarray) -> list[_Kinds]:
    """The blocks (atoms and beads connected by M and the atom pairs ``links`` [K, 2]) that have
    beads, sorted into kinds (same local group labels and M entries), batched by shape."""
    n_beads, n_atoms = position_map.shape
    entries = position_map.tocoo()
    graph = sparse.coo_matrix(
        (
            np.ones(len(links) + entries.nnz),
            (np.r_[links[:, 0], entries.col], np.r_[links[:, 1], n_atoms + entries.row]),
        ),
        shape=(n_atoms + n_beads,) * 2,
    )
    n_blocks, block = connected_components(graph, directed=False)
    atom_block, bead_block = block[:n_atoms], block[n_atoms:]
    group_block = np.empty(groups.max() + 1, dtype=np.int64)
    group_block[groups] = atom_block
    atom_order, atom_start, atom_count, local_atom = _local(atom_block, n_blocks)
    bead_order, bead_start, bead_count, local_bead = _local(bead_block, n_blocks)
    group_order, group_start, group_count, local_group = _local(group_block, n_blocks)
    entry_block = atom_block[entries.col]
    entry_order = np.lexsort((local_atom[entries.col], local_bead[entries.row], entry_block))
    _, entry_start, entry_count, _ = _local(entry_block, n_blocks)
    entry_bead = local_bead[entries.row][entry_order]
    entry_atom = local_atom[entries.col][entry_order]
    entry_value = entries.data[entry_order]
    shapes = np.stack([atom_count, bead_count, group_count, entry_count], axis=1)
    shape_list, shape_of = np.unique(shapes[bead_count > 0], axis=0, return_inverse=True)
    blocks_with_beads = np.flatnonzero(bead_count > 0)
    result = []
    for index, (n, n_bead, n_group, n_entry) in enumerate(shape_list):
        members = blocks_with_beads[shape_of.ravel() == index]
        atoms = atom_order[atom_start[members][:, None] + np.arange(n)]
        beads = bead_order[bead_start[members][:, None] + np.arange(n_bead)]
        block_groups = group_order[group_start[members][:, None] + np.arange(n_group)]
        entry = entry_start[members][:, None] + np.arange(n_entry)
        signature = np.hstack(
            [local_group[groups[atoms]], entry_bead[entry], entry_atom[entry], entry_value[entry]]
        )
        _, first, kind = np.unique(signature, axis=0, return_index=True, return_inverse=True)
        position = np.zeros((len(first), n_bead, n))
        kind_index = np.repeat(np.arange(len(first)), n_entry)
        position[kind_index, entry_bead[entry[first]].ravel(), entry_atom[entry[first]].ravel()] = (
            entry_value[entry[first]].ravel()
        )
        result.append(
            _Kinds(
                atoms=atoms,
                beads=beads,
                groups=block_groups,
                kind=kind.ravel(),
                atom_group=local_group[groups[atoms[first]]],
                position=position,
            )
        )
    return result


def _local(labels: np.ndarray, n_blocks: int) -> tuple[np.ndarray, ...]:
    """(order, start, count per block, local index of each item) of items labelled by block."""
    order = np.argsort(labels, kind="stable")
    count = np.bincount(labels, minlength=n_blocks)
    start = np.r_[0, np.cumsum(count)[:-1]]
    local = np.empty(len(labels), dtype=np.int64)
    local[order] = np.arange(len(labels)) - start[labels[order]]
    return order, start, count, local


def _check_position_map(position_map: sparse.spmatrix) -> sparse.csr_matrix:
    """``position_map`` as float64 CSR without stored zeros, after checking its rows."""
    matrix = sparse.csr_matrix(position_map, dtype=np.float64, copy=True)
    matrix.eliminate_zeros()
    empty = np.flatnonzero(matrix.getnnz(axis=1) == 0)
    if len(empty):
        raise ValueError(f"bead {empty[0]} has no atoms; give every bead at least one atom")
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    off = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_ATOL)
    if len(off):
        raise ValueError(
            f"bead {off[0]}'s position weights sum to {sums[off[0]]:.6g}; "
            "normalise each row of the position map to 1"
        )
    return matrix


def _members(position_map: sparse.spmatrix) -> sparse.spmatrix:
    """1 where atom i belongs to bead I (``M[I, i] != 0``), same sparse format."""
    members = position_map.copy()
    members.eliminate_zeros()
    members.data = np.ones_like(members.data)
    return members


def _constraint_pairs(constraints: np.ndarray, n_atoms: int) -> np.ndarray:
    """``constraints`` as an int64 [K, 2] array of atom pairs, after checking the indices."""
    pairs = np.asarray(constraints, dtype=np.int64)
    if pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"constraints have shape {pairs.shape}; pass [K, 2] atom index pairs")
    if pairs.min() < 0 or pairs.max() >= n_atoms:
        raise ValueError(
            f"constraints name atoms {pairs.min()}..{pairs.max()} but there are {n_atoms}; "
            "use 0-based indices of this topology"
        )
    return pairs


def _first_atom_order(labels: np.ndarray) -> np.ndarray:
    """Relabel ``labels`` [N] 0, 1, ... in order of each label's first atom."""
    first = np.full(labels.max() + 1, len(labels))
    np.minimum.at(first, labels, np.arange(len(labels)))
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[labels]
