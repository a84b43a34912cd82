"""Tests for cgkd.observables.order: tetrahedral order, Steinhardt q_l, coordination numbers and
local densities against perfect lattices, the ideal gas and brute-force loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import eval_legendre

from cgkd.observables.order import (
    CoordinationNumbers,
    LocalDensity,
    Steinhardt,
    TetrahedralOrder,
    neighbour_counts,
    steinhardt_order,
    tetrahedral_order,
)
from cgkd.observables.trajectory import Frame, Trajectory

SC = [(0.0, 0.0, 0.0)]
BCC = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.5)]
FCC = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)]
DIAMOND = FCC + [(x + 0.25, y + 0.25, z + 0.25) for x, y, z in FCC]
# Shift putting beads on both sides of every box face (positions are left unwrapped).
SHIFT = np.array([-0.13, 0.41, 0.97])


def lattice(basis: list[tuple[float, float, float]], n_cells: int, a: float = 0.4) -> Trajectory:
    """One frame of a cubic lattice of ``n_cells``^3 cells of edge ``a`` nm, shifted by SHIFT."""
    cells = np.array(list(itertools.product(range(n_cells), repeat=3)), dtype=float)
    positions = (cells[:, None, :] + np.asarray(basis)[None]).reshape(-1, 3) * a + SHIFT
    return Trajectory(positions[None], np.eye(3)[None] * n_cells * a)


def ideal_gas(n_frames: int, n_beads: int, length: float, seed: int = 0, **kwargs) -> Trajectory:
    """Uniform random positions in a cubic box of edge ``length`` nm."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0.0, length, size=(n_frames, n_beads, 3))
    return Trajectory(positions, np.tile(np.eye(3) * length, (n_frames, 1, 1)), **kwargs)


def two_species(trajectory: Trajectory, types: np.ndarray) -> Trajectory:
    """The frames of ``trajectory`` with species A (0) and B (1) from ``types``."""
    frames = [trajectory.frame(t) for t in range(trajectory.n_frames)]
    return Trajectory(
        np.stack([f.positions for f in frames]),
        np.stack([f.box for f in frames]),
        types=types,
        type_names=["A", "B"],
    )


def separations(frame: Frame, i: int) -> np.ndarray:
    """Minimum-image vectors [N, 3] (nm) from bead i to every bead, by a loop over beads."""
    lengths = np.diag(frame.box)
    result = np.empty_like(frame.positions)
    for j, position in enumerate(frame.positions):
        d = position - frame.positions[i]
        result[j] = d - lengths * np.round(d / lengths)
    return result


def brute_q_l(frame: Frame, l: int, cutoff: float, centres, neighbours) -> np.ndarray:  # noqa: E741
    """q_l(i)^2 = sum_jk P_l(cos theta_jk) / N_b^2 over neighbours j, k (addition theorem)."""
    result = []
    for i in np.flatnonzero(centres):
        d = separations(frame, i)
        bonds = [d[j] for j in np.flatnonzero(neighbours) if j != i and d[j] @ d[j] <= cutoff**2]
        total = 0.0
        for u, v in itertools.product(bonds, bonds):
            total += eval_legendre(l, u @ v / np.sqrt((u @ u) * (v @ v)))
        result.append(np.sqrt(total) / len(bonds) if bonds else np.nan)
    return np.asarray(result)


def brute_tetrahedral(frame: Frame, centres, neighbours) -> np.ndarray:
    """q_i = 1 - 3/8 sum_{j<k} (cos psi_jk + 1/3)^2 over the 4 nearest neighbours of i."""
    result = []
    for i in np.flatnonzero(centres):
        d = separations(frame, i)
        candidates = [j for j in np.flatnonzero(neighbours) if j != i]
        nearest = sorted(candidates, key=lambda j: d[j] @ d[j])[:4]
        q = 1.0
        for j, k in itertools.combinations(nearest, 2):
            cosine = d[j] @ d[k] / np.sqrt((d[j] @ d[j]) * (d[k] @ d[k]))
            q -= 3.0 / 8.0 * (cosine + 1.0 / 3.0) ** 2
        result.append(q)
    return np.asarray(result)


def brute_counts(frame: Frame, cutoff: float, centres, neighbours) -> np.ndarray:
    """Number of neighbour beads j != i within ``cutoff`` of each centre i."""
    result = []
    for i in np.flatnonzero(centres):
        d = separations(frame, i)
        result.append(sum(j != i and d[j] @ d[j] <= cutoff**2 for j in np.flatnonzero(neighbours)))
    return np.asarray(result)


def integral(result) -> float:
    """Sum of y times bin width, for uniform bins."""
    return float(np.sum(result.y) * (result.x[1] - result.x[0]))


@pytest.mark.parametrize(
    ("basis", "cutoff", "n_neighbours", "q4", "q6"),
    [
        (FCC, 0.85, 12, 0.19094, 0.57452),
        (SC, 1.2, 6, 0.76376, 0.35355),
        (BCC, 0.93, 8, 0.50918, 0.62854),
    ],
    ids=["fcc", "sc", "bcc"],
)
def test_perfect_lattices_give_known_q4_q6_and_coordination(
    basis, cutoff: float, n_neighbours: int, q4: float, q6: float
) -> None:
    """Cutoffs (in lattice constants) lie between the first and second neighbour shells."""
    a = 0.4
    trajectory = lattice(basis, 4, a)
    frame = trajectory.frame(0)
    for l, expected in ((4, q4), (6, q6)):  # noqa: E741
        values = steinhardt_order(frame, l, cutoff * a)
        np.testing.assert_allclose(values, expected, atol=5e-6)
        result = Steinhardt(l, cutoff * a, n_bins=50).run(trajectory)
        assert result.name == f"q{l}"
        assert result.attrs["mean"] == pytest.approx(expected, abs=5e-6)
        assert result.attrs["fraction_without_neighbours"] == 0.0
        assert integral(result) == pytest.approx(1.0)
        assert result.y[int(expected * 50)] == pytest.approx(50.0)  # one bin of width 0.02
    counts = CoordinationNumbers(cutoff * a, max_count=16).run(trajectory)
    assert counts.name == "coordination numbers"
    np.testing.assert_array_equal(counts.x, np.arange(17))
    np.testing.assert_array_equal(counts.y, np.eye(17)[n_neighbours])
    assert counts.attrs["mean"] == n_neighbours


@pytest.mark.parametrize("l", [2, 4, 6, 8])
def test_steinhardt_matches_addition_theorem_brute_force(l: int) -> None:  # noqa: E741
    """Per-bead q_l, with and without species selection, against loops over bead pairs."""
    trajectory = ideal_gas(2, 40, 1.4, seed=l)
    types = np.arange(40) % 3 == 0
    cutoff = 0.38
    for t in range(2):
        frame = trajectory.frame(t)
        for centres, neighbours in ((None, None), (types, ~types), (None, types)):
            c = np.ones(40, bool) if centres is None else centres
            n = np.ones(40, bool) if neighbours is None else neighbours
            expected = brute_q_l(frame, l, cutoff, c, n)
            values = steinhardt_order(frame, l, cutoff, centres, neighbours)
            np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))
            np.testing.assert_allclose(values, expected, rtol=0, atol=1e-10)
    # The run's mean is over all bead-frames with neighbours, not a mean of frame means.
    selection = two_species(trajectory, (~types).astype(int))  # the selected beads are A
    result = Steinhardt(l, cutoff, centre="A", neighbours="A").run(selection)
    assert result.name == f"q{l} A-A"
    pooled = np.concatenate(
        [brute_q_l(trajectory.frame(t), l, cutoff, types, types) for t in range(2)]
    )
    assert np.isnan(pooled).any()
    assert result.attrs["mean"] == pytest.approx(np.nanmean(pooled), abs=1e-10)
    assert result.attrs["fraction_without_neighbours"] == pytest.approx(np.isnan(pooled).mean())
    assert result.attrs["n_samples"] == np.count_nonzero(~np.isnan(pooled))
    assert integral(result) == pytest.approx(1.0)


def test_single_neighbour_gives_q_l_one_and_isolated_beads_are_skipped() -> None:
    """|sum_m Y_lm|^2 of one bond is (2l+1)/(4 pi) whatever its direction."""
    positions = np.array([[0.1, 0.2, 0.3], [0.27, 0.05, 0.41], [1.5, 1.5, 1.5]])
    frame = Frame(0, positions, np.eye(3) * 3.0, 0.0)
    for l in (1, 3, 6, 12):  # noqa: E741
        q = steinhardt_order(frame, l, 0.3)
        np.testing.assert_allclose(q[:2], 1.0, atol=1e-12)
        assert np.isnan(q[2])


def test_tetrahedral_order_is_one_on_diamond() -> None:
    trajectory = lattice(DIAMOND, 3, 0.5)
    np.testing.assert_allclose(tetrahedral_order(trajectory.frame(0)), 1.0, atol=1e-12)
    result = TetrahedralOrder(n_bins=40).run(trajectory)
    assert result.name == "tetrahedral"
    assert result.attrs["mean"] == pytest.approx(1.0, abs=1e-12)
    assert result.y[-1] == pytest.approx(20.0)  # all in the last bin, of width 0.05
    assert integral(result) == pytest.approx(1.0)


def test_tetrahedral_order_matches_brute_force() -> None:
    """Including mixed selections: centres that are neighbours (query 5) and that are not."""
    trajectory = ideal_gas(2, 30, 1.3, seed=3)
    types = np.arange(30) % 2 == 0
    for t in range(2):
        frame = trajectory.frame(t)
        for centres, neighbours in ((None, None), (types, ~types), (None, types)):
            c = np.ones(30, bool) if centres is None else centres
            n = np.ones(30, bool) if neighbours is None else neighbours
            np.testing.assert_allclose(
                tetrahedral_order(frame, centres, neighbours),
                brute_tetrahedral(frame, c, n),
                rtol=0,
                atol=1e-12,
            )


def test_ideal_gas_means() -> None:
    """Random positions: <q> = 0 (independent neighbour directions); neighbour count and
    local density follow the mean density (N - 1)/V of the other beads."""
    n_beads, length, radius = 1000, 3.1, 0.5
    trajectory = ideal_gas(8, n_beads, length, seed=11)
    density = (n_beads - 1) / length**3
    tetrahedral = TetrahedralOrder().run(trajectory)
    assert tetrahedral.attrs["mean"] == pytest.approx(0.0, abs=0.03)
    assert 0.0 < tetrahedral.attrs["fraction_outside"] < 0.1  # q < -1 happens
    assert integral(tetrahedral) == pytest.approx(1.0 - tetrahedral.attrs["fraction_outside"])
    counts = CoordinationNumbers(radius, max_count=40).run(trajectory)
    assert counts.attrs["mean"] == pytest.approx(density * 4 / 3 * np.pi * radius**3, rel=0.03)
    assert counts.attrs["mean"] == pytest.approx(np.sum(counts.x * counts.y), rel=1e-12)
    local = LocalDensity(radius, max_count=40).run(trajectory)
    assert local.name == "local density"
    assert local.attrs["mean"] == pytest.approx(density, rel=0.03)
    assert local.attrs["mean"] == pytest.approx(counts.attrs["mean"] / (4 / 3 * np.pi * radius**3))
    assert local.attrs["n_samples"] == 8 * n_beads
    for result in (tetrahedral, counts, local):
        assert np.all(result.yerr >= 0) and np.any(result.yerr > 0)
    assert np.sum(counts.y) == pytest.approx(1.0)
    assert integral(local) == pytest.approx(1.0)
    # Bins sit on the densities of whole counts: the same distribution as the counts.
    np.testing.assert_allclose(local.x * 4 / 3 * np.pi * radius**3, counts.x, atol=1e-12)
    np.testing.assert_allclose(local.y / (4 / 3 * np.pi * radius**3), counts.y, rtol=1e-12)
    # The mean's block error is of the size of the spread of the frame means.
    assert 0 < counts.attrs["mean_err"] < 0.05 * counts.attrs["mean"]


def test_neighbour_counts_match_brute_force() -> None:
    trajectory = ideal_gas(1, 40, 1.4, seed=5)
    frame = trajectory.frame(0)
    types = np.arange(40) % 4 == 1
    for centres, neighbours in ((None, None), (types, ~types), (~types, ~types)):
        c = np.ones(40, bool) if centres is None else centres
        n = np.ones(40, bool) if neighbours is None else neighbours
        np.testing.assert_array_equal(
            neighbour_counts(frame, 0.45, centres, neighbours), brute_counts(frame, 0.45, c, n)
        )


def test_coordination_counts_above_max_count_go_in_the_last_bin() -> None:
    result = CoordinationNumbers(0.34, max_count=5).run(lattice(FCC, 3, 0.4))
    np.testing.assert_array_equal(result.y, [0, 0, 0, 0, 0, 1])
    assert result.attrs["mean"] == 12.0
    assert result.attrs["fraction_outside"] == 1.0


def test_species_selection_on_rock_salt_and_zincblende() -> None:
    """Rock salt: each A has 6 B at a and 12 A at sqrt(2) a; zincblende: 4 B around each A."""
    a = 0.3
    rock_salt = lattice(SC, 6, a)
    cells = np.array(list(itertools.product(range(6), repeat=3)))
    salt = two_species(rock_salt, cells.sum(axis=1) % 2)
    unlike = CoordinationNumbers(1.2 * a, max_count=20, centre="A", neighbours="B").run(salt)
    assert unlike.name == "coordination numbers A-B"
    assert unlike.attrs["mean"] == 6.0 and unlike.y[6] == 1.0
    like = CoordinationNumbers(1.6 * a, max_count=20, centre="A", neighbours=0).run(salt)
    assert like.attrs["mean"] == 12.0 and like.y[12] == 1.0
    assert like.attrs["n_samples"] == 108
    q4 = Steinhardt(4, 1.2 * a, centre="B", neighbours="A").run(salt)
    assert q4.name == "q4 B-A"
    assert q4.attrs["mean"] == pytest.approx(0.76376, abs=5e-6)
    q6 = Steinhardt(6, 1.6 * a, centre=1, neighbours="B").run(salt)
    assert q6.attrs["mean"] == pytest.approx(0.57452, abs=5e-6)
    everyone = CoordinationNumbers(1.6 * a, max_count=20, centre="A").run(salt)
    assert everyone.name == "coordination numbers A"
    assert everyone.attrs["mean"] == 18.0
    zincblende = two_species(lattice(DIAMOND, 3, 0.5), np.tile(np.repeat([0, 1], 4), 27))
    tetrahedral = TetrahedralOrder(centre="A", neighbours="B").run(zincblende)
    assert tetrahedral.attrs["mean"] == pytest.approx(1.0, abs=1e-12)
    local = LocalDensity(0.3, centre="A", neighbours="B").run(zincblende)
    assert local.attrs["mean"] == pytest.approx(4 / (4 / 3 * np.pi * 0.3**3))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TetrahedralOrder(n_bins=0), "n_bins"),
        (lambda: TetrahedralOrder(q_range=(1.0, -1.0)), "q_range"),
        (lambda: Steinhardt(0, 0.3), "l must"),
        (lambda: Steinhardt(4.5, 0.3), "l must"),
        (lambda: Steinhardt(6, -0.3), "cutoff"),
        (lambda: Steinhardt(6, 0.3, n_bins=2.5), "n_bins"),
        (lambda: CoordinationNumbers(0.0), "cutoff"),
        (lambda: CoordinationNumbers(0.3, max_count=0), "max_count"),
        (lambda: LocalDensity(-1.0), "radius"),
        (lambda: LocalDensity(0.5, max_count=0), "max_count"),
    ],
)
def test_bad_parameters_raise(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_selections_and_cutoffs_raise() -> None:
    gas = ideal_gas(2, 20, 1.0, types=np.r_[np.zeros(16, int), np.ones(4, int)])
    with pytest.raises(ValueError, match="unknown species 'C'"):
        CoordinationNumbers(0.3, centre="C").run(gas)
    with pytest.raises(ValueError, match="out of range"):
        Steinhardt(6, 0.3, neighbours=2).run(gas)
    with pytest.raises(ValueError, match=r"cutoff=0\.6 nm exceeds half"):
        Steinhardt(6, 0.6).run(gas)
    with pytest.raises(ValueError, match=r"radius=0\.7 nm exceeds half"):
        LocalDensity(0.7).run(gas)
    with pytest.raises(ValueError, match="4 neighbour beads are selected"):
        TetrahedralOrder(centre="1", neighbours="1").run(gas)
    TetrahedralOrder(centre="0", neighbours="1").run(gas)  # 4 others suffice
    with pytest.raises(ValueError, match="no centre bead has a neighbour"):
        Steinhardt(6, 0.01).run(gas)
