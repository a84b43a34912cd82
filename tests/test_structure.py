"""Tests for cgkd.observables.structure: S(q) from an RDF and directly from densities."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cgkd.observables.base import ObservableResult
from cgkd.observables.rdf import RDF
from cgkd.observables.structure import StructureFactor, structure_factor
from cgkd.observables.trajectory import Trajectory


def cubic_boxes(n_frames: int, length: float) -> np.ndarray:
    return np.tile(np.eye(3) * length, (n_frames, 1, 1))


def random_sequential_addition(
    n_beads: int, length: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Hard spheres of diameter ``sigma`` (nm) added one by one at random, overlaps rejected.

    Candidates come in batches; a candidate is kept unless it overlaps a bead kept before it,
    which is exactly sequential addition. At packing ~0.3 g(r) has a contact peak and S(q)
    a first peak of ~1.4 near q sigma ~ 6.
    """
    points = np.empty((0, 3))
    while len(points) < n_beads:
        candidates = rng.uniform(0.0, length, (4 * (n_beads - len(points)) + 100, 3))
        if len(points):
            distance, _ = cKDTree(points, boxsize=length).query(
                candidates, distance_upper_bound=sigma
            )
            candidates = candidates[np.isinf(distance)]
        kept = np.ones(len(candidates), dtype=bool)
        pairs = cKDTree(candidates, boxsize=length).query_pairs(sigma, output_type="ndarray")
        for i, j in pairs[np.argsort(pairs[:, 1], kind="stable")]:
            kept[j] &= not kept[i]
        points = np.concatenate([points, candidates[kept][: n_beads - len(points)]])
    return points


def brute_force_sq(
    positions: np.ndarray, boxes: np.ndarray, q_min: float, q_max: float, n_bins: int
) -> np.ndarray:
    """Per-frame shell means [T, n_bins] of |sum_j exp(i k.r_j)|^2 / N over all k (both
    signs), NaN for shells without k-vectors; explicit loops over k and beads."""
    width = (q_max - q_min) / n_bins
    per_frame = np.full((len(positions), n_bins), np.nan)
    for t, (r, box) in enumerate(zip(positions, boxes, strict=True)):
        lengths = np.diag(box)
        n_max = int(np.ceil(q_max * lengths.max() / (2.0 * np.pi)))
        sums, counts = np.zeros(n_bins), np.zeros(n_bins)
        for n in itertools.product(range(-n_max, n_max + 1), repeat=3):
            k = 2.0 * np.pi * np.array(n) / lengths
            q = np.linalg.norm(k)
            if q == 0 or not q_min <= q < q_max:
                continue
            rho = sum(np.exp(1j * np.dot(k, r_j)) for r_j in r)
            shell = int((q - q_min) // width)
            sums[shell] += abs(rho) ** 2 / len(r)
            counts[shell] += 1
        np.divide(sums, counts, out=per_frame[t], where=counts > 0)
    return per_frame


def test_direct_sq_matches_brute_force_over_species_and_changing_boxes():
    rng = np.random.default_rng(4)
    boxes = np.array([np.diag([1.13, 1.37, 0.91]), np.diag([0.8, 0.85, 0.9])])
    lengths = np.diagonal(boxes, axis1=1, axis2=2)
    # Unwrapped positions, up to two box lengths outside: exp(i k.r) must not care.
    positions = rng.uniform(-2.0, 3.0, (2, 7, 3)) * lengths[:, None, :]
    types = np.array([0, 1, 1, 0, 1, 0, 1])
    trajectory = Trajectory(positions, boxes, types=types, type_names=["A", "B"])
    q_min, q_max, n_bins = 3.1, 15.3, 12
    for species, index in ((None, slice(None)), ("B", types == 1)):
        result = StructureFactor(q_max, n_bins, q_min=q_min, species=species).run(trajectory)
        per_frame = brute_force_sq(positions[:, index], boxes, q_min, q_max, n_bins)
        # A shell with k-vectors in one box only is that frame's value; with none, NaN.
        defined = np.isfinite(per_frame)
        assert np.any(defined.any(axis=0) & ~defined.all(axis=0))
        assert np.any(~defined.any(axis=0))
        expected = np.full(n_bins, np.nan)
        np.divide(
            np.nansum(per_frame, axis=0), defined.sum(axis=0), out=expected, where=defined.any(0)
        )
        assert np.array_equal(np.isnan(result.y), np.isnan(expected))
        np.testing.assert_allclose(result.y, expected, rtol=0, atol=1e-10)
    assert result.name == "S(q) B-B" and result.attrs["n_beads"] == 4


def test_direct_sq_of_simple_cubic_lattice_is_n_at_bragg_peaks_and_zero_elsewhere():
    # 8^3 beads in a 2 nm box: the Bragg vectors are the reciprocal vectors n with n % 8 == 0.
    cells, a = 8, 0.25
    length = cells * a
    grid = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(5)
    unwrap = rng.integers(-3, 4, grid.shape)  # whole box lengths: the same lattice
    positions = ((grid + 0.3) * a + unwrap * length)[None]
    trajectory = Trajectory(positions, cubic_boxes(1, length))
    n_beads = len(grid)

    # Between the shells |n|^2 = 63 and 65 only |n|^2 = 64 = 8^2: the six (8, 0, 0) vectors.
    peak = StructureFactor(25.2, 1, q_min=25.0).run(trajectory)
    assert 2.0 * np.pi / a == pytest.approx(25.13, abs=0.01)
    np.testing.assert_allclose(peak.y, [n_beads], rtol=1e-12)

    # Every shell: N times the fraction of its k-vectors that are Bragg vectors.
    q_max, n_bins = 40.0, 80
    result = StructureFactor(q_max, n_bins).run(trajectory)
    n = np.array(list(itertools.product(range(-13, 14), repeat=3)))
    q = 2.0 * np.pi / length * np.linalg.norm(n, axis=1)
    inside = (q > 0) & (q < q_max)
    shell = (q[inside] // (q_max / n_bins)).astype(int)
    counts = np.bincount(shell, minlength=n_bins)
    bragg = np.bincount(shell, weights=np.all(n[inside] % cells == 0, axis=1), minlength=n_bins)
    assert np.array_equal(np.isnan(result.y), counts == 0)
    has_k = counts > 0
    np.testing.assert_allclose(
        result.y[has_k], n_beads * bragg[has_k] / counts[has_k], rtol=1e-12, atol=1e-10
    )
    assert bragg.sum() == 6 + 12  # the (100) and (110) families below 40 nm^-1
    assert np.all(result.y[has_k & (bragg == 0)] < 1e-10)


def test_ideal_gas_sq_is_one_both_ways():
    rng = np.random.default_rng(6)
    length, n_frames = 3.0, 20
    positions = rng.uniform(0.0, length, (n_frames, 500, 3))
    trajectory = Trajectory(positions, cubic_boxes(n_frames, length))

    direct = StructureFactor(30.0, 30).run(trajectory, n_blocks=10)
    has_k = np.isfinite(direct.y)
    assert has_k.sum() >= 25
    pulls = (direct.y[has_k] - 1.0) / direct.yerr[has_k]
    assert abs(direct.y[has_k].mean() - 1.0) < 0.02
    assert 0.5 < np.sqrt(np.mean(pulls**2)) < 2.0 and np.abs(pulls).max() < 5.0

    rdf = RDF(r_max=1.5, n_bins=75).run(trajectory, n_blocks=10)
    for window in ("lorch", "none"):
        # q = 0 is the compressibility limit, S(0) = 1 for an ideal gas.
        from_rdf = structure_factor(rdf, q=np.concatenate([[0.0], direct.x]), window=window)
        pulls = (from_rdf.y - 1.0) / from_rdf.yerr
        assert np.abs(from_rdf.y - 1.0).max() < 0.15
        assert np.sqrt(np.mean(pulls**2)) < 2.0 and np.abs(pulls).max() < 5.0
        assert from_rdf.name == "S(q)" and from_rdf.attrs["window"] == window


def test_sq_from_step_rdf_is_the_exact_transform():
    """g(r) = 0 below sigma and 1 above (a bin edge), on coarse bins: the transforms have
    closed forms, 1 - 4 pi rho int_0^sigma r^2 sinc(qr) W(r) dr, which the bin integration
    must reproduce to rounding even where q times the bin width is ~3."""
    sigma, rho, r_max, width = 0.3, 30.0, 1.5, 0.05
    r = np.arange(width / 2, r_max, width)
    g = (r > sigma).astype(float)
    rdf = ObservableResult(
        "rdf", r, g, np.zeros_like(r), "r", "g", attrs={"density": rho, "same_species": True}
    )
    q = np.linspace(0.5, 60.0, 120)

    plain = structure_factor(rdf, q=np.concatenate([[0.0], q]), window="none")
    integral = (np.sin(q * sigma) - q * sigma * np.cos(q * sigma)) / q**3
    expected = np.concatenate(
        [[1.0 - rho * 4.0 / 3.0 * np.pi * sigma**3], 1.0 - 4 * np.pi * rho * integral]
    )
    np.testing.assert_allclose(plain.y, expected, rtol=1e-10, atol=1e-10)
    assert np.all(plain.yerr == 0)

    # Lorch: r^2 sinc(qr) sinc(a r) = sin(qr) sin(ar) / (q a), a = pi / r_max.
    lorch = structure_factor(rdf, q=q)
    a = np.pi / r_max
    integral = (np.sin((q - a) * sigma) / (q - a) - np.sin((q + a) * sigma) / (q + a)) / (
        2.0 * q * a
    )
    np.testing.assert_allclose(lorch.y, 1.0 - 4 * np.pi * rho * integral, rtol=1e-10, atol=1e-10)


def test_error_bars_match_the_scatter_between_independent_runs():
    """Twelve independent ideal-gas runs: the spread of each route's S(q) between runs is what
    its error bars say (ratio within the ~25% noise of 12 runs and of 5-block errors)."""
    length, q = 3.0, np.array([0.0, 3.0, 6.0, 10.0, 15.0, 20.0, 30.0])
    direct, direct_err, from_rdf, from_rdf_err = [], [], [], []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        positions = rng.uniform(0.0, length, (10, 300, 3))
        trajectory = Trajectory(positions, cubic_boxes(10, length))
        result = StructureFactor(20.0, 10, q_min=4.0).run(trajectory)
        direct.append(result.y)
        direct_err.append(result.yerr)
        result = structure_factor(RDF(r_max=1.5, n_bins=75).run(trajectory), q=q)
        from_rdf.append(result.y)
        from_rdf_err.append(result.yerr)
    for values, errors in ((direct, direct_err), (from_rdf, from_rdf_err)):
        ratio = np.std(values, axis=0, ddof=1) / np.sqrt(np.mean(np.square(errors), axis=0))
        assert 0.7 < np.median(ratio) < 1.5


def test_sq_from_rdf_agrees_with_direct_sq_on_hard_sphere_fluid():
    """Two independent routes to S(q) on a structured fluid (random sequential addition).

    They differ only by the RDF's truncation at r_max = L/2 and the window: S(q) from g(r) is
    smeared over ~2 pi/r_max = 4 nm^-1 (Lorch) or rippled by the cut (none), which matters at
    low q where S(q) is set by h(r) beyond r_max, and at the first peak. Above 4 pi/r_max the
    routes must agree within 0.05 plus three combined standard errors (measured: at most 0.63
    of that, at the Lorch-flattened peak of height 1.45); wrong normalisation, density or
    k-vectors would show as errors of order |S(q) - 1| ~ 0.5.
    """
    rng = np.random.default_rng(3)
    length, n_frames, n_beads = 3.1, 6, 1000
    positions = np.stack(
        [random_sequential_addition(n_beads, length, 0.26, rng) for _ in range(n_frames)]
    )
    types = rng.permutation(np.arange(n_beads) % 2)  # random labels: partial S_AA too
    trajectory = Trajectory(
        positions, cubic_boxes(n_frames, length), types=types, type_names=["A", "B"]
    )
    for species, pair in ((None, None), ("A", ("A", "A"))):
        direct = StructureFactor(30.0, 30, species=species).run(trajectory)
        rdf = RDF(r_max=length / 2, n_bins=155, pair=pair).run(trajectory)
        compared = np.isfinite(direct.y) & (direct.x > 4.0 * np.pi / (length / 2))
        if species is None:  # the test needs structure: a deep S(0) and a first peak
            assert direct.y[compared].min() < 0.15 and direct.y[compared].max() > 1.3
        for window in ("lorch", "none"):
            from_rdf = structure_factor(rdf, q=direct.x[compared], window=window)
            assert from_rdf.name == direct.name
            error = np.hypot(from_rdf.yerr, direct.yerr[compared])
            np.testing.assert_array_less(
                np.abs(from_rdf.y - direct.y[compared]), 0.05 + 3.0 * error
            )


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="q_max must be"):
        StructureFactor(0.0, 10)
    with pytest.raises(ValueError, match="n_bins must be"):
        StructureFactor(30.0, 0)
    with pytest.raises(ValueError, match="q_min must be"):
        StructureFactor(30.0, 10, q_min=30.0)
    positions = np.random.default_rng(7).uniform(0.0, 1.0, (2, 20, 3))
    trajectory = Trajectory(
        positions, cubic_boxes(2, 1.0), types=np.zeros(20, int), type_names=["A", "B"]
    )
    with pytest.raises(ValueError, match="no bead of species 'B'"):
        StructureFactor(30.0, 10, species="B").run(trajectory)
    with pytest.raises(ValueError, match="no reciprocal-lattice vector"):
        StructureFactor(5.0, 10).run(trajectory)

    rdf = RDF(r_max=0.5, n_bins=20).run(trajectory)
    with pytest.raises(ValueError, match="window="):
        structure_factor(rdf, window="hann")
    with pytest.raises(ValueError, match="q must be"):
        structure_factor(rdf, q=np.array([-1.0, 2.0]))
    cross_attrs = {**rdf.attrs, "same_species": False}
    cross = ObservableResult("rdf A-B", rdf.x, rdf.y, rdf.yerr, "r", "g", attrs=cross_attrs)
    with pytest.raises(ValueError, match="cross-species"):
        structure_factor(cross)
    not_rdf = ObservableResult("adf", rdf.x, rdf.y, rdf.yerr, "r", "g")
    with pytest.raises(ValueError, match="not an RDF"):
        structure_factor(not_rdf)
