"""Force maps: validity (W M^T = I, equal weights on constraint groups), the basic,
constraint-aware and optimal maps on hand-built position maps and synthetic forces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from cgkd.mapping.force_maps import (
    FORCE_MAPS,
    apply_map,
    basic_force_map,
    build_force_map,
    constraint_aware_force_map,
    constraint_groups,
    crossing_constraints,
    force_map_is_valid,
    force_map_violations,
    optimal_force_map,
)

#: A 6-atom molecule in two mass-weighted beads: atoms 0-2 and 3-5.
MASSES = np.array([12.0, 1.0, 14.0, 12.0, 1.0, 16.0])
BEADS = [[0, 1, 2], [3, 4, 5]]
INSIDE = [(0, 1), (3, 4)]  # constraints within a bead
ACROSS = [(0, 1), (2, 3)]  # (2, 3) crosses the bead boundary


def molecules_map(
    n_molecules: int, masses: np.ndarray, beads: list[list[int]], constraints: list[tuple]
) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
    """(M, constraints, molecule labels) of ``n_molecules`` copies of one molecule."""
    n, rows, cols, values = len(masses), [], [], []
    for k in range(n_molecules):
        for b, atoms in enumerate(beads):
            rows += [k * len(beads) + b] * len(atoms)
            cols += [k * n + i for i in atoms]
            values += list(masses[atoms] / masses[atoms].sum())
    shape = (n_molecules * len(beads), n_molecules * n)
    pairs = np.array([(k * n + i, k * n + j) for k in range(n_molecules) for i, j in constraints])
    return (
        sparse.csr_matrix((values, (rows, cols)), shape=shape),
        pairs.reshape(-1, 2),
        np.repeat(np.arange(n_molecules), n),
    )


def correlated_forces(
    rng: np.random.Generator, n_frames: int, n_molecules: int, covariance: np.ndarray
) -> np.ndarray:
    """Zero-mean forces [T, K * n, 3] (kJ/mol/nm), correlated within molecules as ``covariance``."""
    n = len(covariance)
    noise = rng.standard_normal((n_frames, n_molecules, 3, n)) @ np.linalg.cholesky(covariance).T
    return noise.transpose(0, 1, 3, 2).reshape(n_frames, n_molecules * n, 3)


def covariance_6() -> np.ndarray:
    """A fixed, strongly non-uniform SPD covariance of the 6 atoms' forces."""
    rng = np.random.default_rng(7)
    scales = np.array([6.0, 1.0, 3.0, 0.5, 2.0, 4.0])
    root = rng.standard_normal((6, 6))
    return np.diag(scales) @ (root @ root.T / 6 + np.eye(6)) @ np.diag(scales)


def mean_square(matrix: sparse.csr_matrix, forces: np.ndarray) -> float:
    """Mean squared mapped force component (kJ/mol/nm)^2."""
    return float(np.mean(apply_map(matrix, forces) ** 2))


def test_constraint_groups_small_graph() -> None:
    groups = constraint_groups(8, np.array([[6, 3], [3, 1], [5, 7]]))
    assert groups.tolist() == [0, 1, 2, 1, 3, 4, 1, 4]
    assert constraint_groups(3, np.zeros((0, 2), dtype=int)).tolist() == [0, 1, 2]


def test_crossing_constraints_across_and_inside() -> None:
    position_map, _, _ = molecules_map(1, MASSES, BEADS, [])
    constraints = np.array([[0, 1], [2, 3], [4, 5], [5, 0]])
    assert crossing_constraints(position_map, constraints).tolist() == [1, 3]
    overlap = sparse.csr_matrix([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    # Atom 1 is in beads {0, 1}, atom 0 in {0} only: crossing; 1-1 trivially not.
    assert crossing_constraints(overlap, np.array([[0, 1], [1, 1]])).tolist() == [0]


def test_basic_map_com_identity_and_overlap() -> None:
    position_map, _, _ = molecules_map(3, MASSES, BEADS, [])
    force_map = basic_force_map(position_map)
    np.testing.assert_allclose((force_map @ position_map.T).toarray(), np.eye(6), atol=1e-14)
    assert force_map_is_valid(position_map, force_map, np.array(INSIDE))
    overlap = sparse.csr_matrix([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    with pytest.raises(ValueError, match="atom 1 belongs to beads"):
        basic_force_map(overlap)


def test_apply_map_matches_einsum() -> None:
    position_map, _, _ = molecules_map(2, MASSES, BEADS, [])
    values = np.random.default_rng(0).standard_normal((4, 12, 3))
    expected = np.einsum("bi,tix->tbx", position_map.toarray(), values)
    np.testing.assert_allclose(apply_map(position_map, values), expected, atol=1e-14)
    with pytest.raises(ValueError, match="needs"):
        apply_map(position_map, values[:, :5])


def test_bad_position_maps_raise() -> None:
    with pytest.raises(ValueError, match=r"sum to 0\.9"):
        basic_force_map(sparse.csr_matrix([[0.4, 0.5]]))
    with pytest.raises(ValueError, match="bead 1 has no atoms"):
        basic_force_map(sparse.csr_matrix([[1.0, 0.0], [0.0, 0.0]]))


def test_constraint_aware_unchanged_without_crossing() -> None:
    position_map, constraints, _ = molecules_map(4, MASSES, BEADS, INSIDE)
    assert len(crossing_constraints(position_map, constraints)) == 0
    aware = constraint_aware_force_map(position_map, constraints)
    assert (aware != basic_force_map(position_map)).nnz == 0


def test_constraint_aware_by_hand() -> None:
    # Beads {0, 1} and {2, 3} (centres of geometry), constraint 1-2 across them. Groups {0},
    # {1, 2}, {3}; minimising (w0 - 1)^2 + 2 (w1 - 1/2)^2 + w2^2 with w0 + w1 = 2 and
    # w1 + w2 = 0 gives w = (3/2, 1/2, -1/2) for bead 0, and the mirror image for bead 1.
    position_map = sparse.csr_matrix([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    aware = constraint_aware_force_map(position_map, np.array([[1, 2]]))
    expected = [[1.5, 0.5, 0.5, -0.5], [-0.5, 0.5, 0.5, 1.5]]
    np.testing.assert_allclose(aware.toarray(), expected, atol=1e-14)


@pytest.mark.parametrize(
    ("masses", "beads", "constraints"),
    [
        (MASSES, BEADS, ACROSS),
        (MASSES, BEADS, [(0, 1), (1, 2), (2, 3), (4, 5)]),
        (MASSES[:5], [[0, 1, 2], [2, 3, 4]], [(0, 1), (3, 4)]),  # overlap at atom 2
    ],
    ids=["crossing", "chain", "overlap"],
)
def test_constraint_aware_valid(masses: np.ndarray, beads: list, constraints: list) -> None:
    position_map, pairs, _ = molecules_map(3, masses, beads, constraints)
    aware = constraint_aware_force_map(position_map, pairs)
    assert force_map_violations(position_map, aware, pairs) == []


def test_constraint_forces_cancel() -> None:
    position_map, pairs, _ = molecules_map(2, MASSES, BEADS, ACROSS)
    rng = np.random.default_rng(1)
    forces = rng.standard_normal((5, 12, 3))
    # Equal and opposite forces along each crossing constraint (atoms 2-3 and 8-9).
    kicked = forces.copy()
    for i, j in pairs[crossing_constraints(position_map, pairs)]:
        kick = rng.standard_normal((5, 3)) * 50.0
        kicked[:, i] += kick
        kicked[:, j] -= kick
    aware = constraint_aware_force_map(position_map, pairs)
    basic = basic_force_map(position_map)
    np.testing.assert_allclose(apply_map(aware, kicked), apply_map(aware, forces), atol=1e-10)
    assert np.abs(apply_map(basic, kicked) - apply_map(basic, forces)).max() > 1.0
    assert not force_map_is_valid(position_map, basic, pairs)


def test_violations_name_the_problem() -> None:
    position_map, pairs, _ = molecules_map(1, MASSES, BEADS, ACROSS)
    problems = force_map_violations(position_map, basic_force_map(position_map), pairs)
    assert len(problems) == 1 and "atoms 2 and 3 of constraint 1" in problems[0]
    problems = force_map_violations(position_map, 2 * basic_force_map(position_map), [])
    assert len(problems) == 1 and "W M^T differs from the identity by 1" in problems[0]


@pytest.mark.parametrize("constraints", [INSIDE, ACROSS], ids=["inside", "across"])
def test_optimal_valid_and_never_noisier(constraints: list) -> None:
    position_map, pairs, molecules = molecules_map(100, MASSES, BEADS, constraints)
    forces = correlated_forces(np.random.default_rng(2), 80, 100, covariance_6())
    fit, held_out = forces[:40], forces[40:]
    optimal = optimal_force_map(position_map, pairs, fit, molecules)
    assert force_map_violations(position_map, optimal, pairs) == []
    # The constraint-aware map is the basic one when no constraint crosses a bead.
    reference = constraint_aware_force_map(position_map, pairs)
    assert mean_square(optimal, fit) <= mean_square(reference, fit) * (1 + 1e-5)
    assert mean_square(optimal, held_out) < 0.9 * mean_square(reference, held_out)


def test_optimal_recovers_mean_force() -> None:
    # One bead per 3-atom molecule (COM). F_i = (m_i / M) F_true + noise, F_true random per
    # molecule and frame; the noise is large on atom 0 and correlated between atoms.
    masses = np.array([12.0, 1.0, 16.0])
    share = masses / masses.sum()
    covariance = np.array([[9.0, 2.0, 1.0], [2.0, 1.0, 0.3], [1.0, 0.3, 0.5]])
    n_frames, n_molecules = 100, 200
    position_map, pairs, molecules = molecules_map(n_molecules, masses, [[0, 1, 2]], [])
    rng = np.random.default_rng(3)
    true = rng.standard_normal((n_frames, n_molecules, 3)) * 5.0
    forces = correlated_forces(rng, n_frames, n_molecules, covariance)
    forces += (true[:, :, None, :] * share[:, None]).reshape(n_frames, -1, 3)
    fit, held_out = slice(0, 50), slice(50, None)
    optimal = optimal_force_map(position_map, pairs, forces[fit], molecules)
    assert force_map_is_valid(position_map, optimal, pairs)
    # Hand check: minimum-variance weights Σ^-1 a / (a^T Σ^-1 a) with a = m / M.
    solved = np.linalg.solve(covariance, share)
    best = solved / (share @ solved)
    np.testing.assert_allclose(optimal[0, :3].toarray().ravel(), best, atol=0.03)
    for force_map, variance in [
        (optimal, 1.0 / (share @ solved)),
        (basic_force_map(position_map), covariance.sum()),
    ]:
        error = apply_map(force_map, forces[held_out]) - true[held_out]
        standard_error = np.sqrt(variance / error[..., 0].size)
        assert np.all(np.abs(error.mean(axis=(0, 1))) < 5 * standard_error)
        assert error.var() == pytest.approx(variance, rel=0.05)
    assert 1.0 / (share @ solved) < 0.5 * covariance.sum()


def test_identical_molecules_are_pooled() -> None:
    position_map, pairs, molecules = molecules_map(2, MASSES, BEADS, ACROSS)
    forces = correlated_forces(np.random.default_rng(4), 30, 2, covariance_6())
    weights = optimal_force_map(position_map, pairs, forces, molecules).toarray()
    np.testing.assert_array_equal(weights[:2, :6], weights[2:, 6:])
    assert not weights[:2, 6:].any() and not weights[2:, :6].any()
    # Pooling two molecules is fitting one molecule on both molecules' frames.
    single, single_pairs, single_molecules = molecules_map(1, MASSES, BEADS, ACROSS)
    stacked = np.concatenate([forces[:, :6], forces[:, 6:]])
    alone = optimal_force_map(single, single_pairs, stacked, single_molecules).toarray()
    np.testing.assert_allclose(weights[:2, :6], alone, atol=1e-10)
    # A molecule with other masses is another kind, fitted on its own.
    other, _, _ = molecules_map(1, MASSES[::-1], BEADS, ACROSS)
    mixed = sparse.block_diag([single, other], format="csr")
    fitted = optimal_force_map(mixed, pairs, forces, molecules).toarray()
    assert np.abs(fitted[:2, :6] - weights[:2, :6]).max() > 1e-3
    assert force_map_is_valid(mixed, sparse.csr_matrix(fitted), pairs)


def test_no_valid_map_raises() -> None:
    # Two one-atom beads joined by a constraint: their forces cannot be told apart.
    position_map = sparse.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match=r"no force map satisfies W M\^T = I for beads \[0, 1\]"):
        constraint_aware_force_map(position_map, np.array([[0, 1]]))


def test_build_force_map_dispatch() -> None:
    position_map, pairs, molecules = molecules_map(2, MASSES, BEADS, INSIDE)
    forces = correlated_forces(np.random.default_rng(5), 10, 2, covariance_6())
    for kind in FORCE_MAPS:
        built = build_force_map(kind, position_map, pairs, forces=forces, molecules=molecules)
        assert isinstance(built, sparse.csr_matrix)
        assert force_map_is_valid(position_map, built, pairs)
    for kind, match in [("mean", "force map 'mean' is unknown"), ("optimal", "pass forces")]:
        with pytest.raises(ValueError, match=match) as error:
            build_force_map(kind, position_map, pairs)
        assert "\n" not in str(error.value)
