"""Tests for cgkd.observables: RDF, ADF, block errors, comparison, serialisation and plots."""

from __future__ import annotations

import json

import MDAnalysis
import numpy as np
import pytest
from MDAnalysis.analysis.rdf import InterRDF
from MDAnalysis.coordinates.memory import MemoryReader

from cgkd.observables import (
    ADF,
    CDF,
    RDF,
    ObservableResult,
    Trajectory,
    block_average,
    compare,
    coordination_number,
    deviation,
    jensen_shannon_divergence,
    mean_absolute_deviation,
    plot_comparison,
    plot_maps,
    rdf_onset,
    relative_integrated_deviation,
    species_pairs,
)
from cgkd.units import ANGSTROM_PER_NM

TETRAHEDRAL_ANGLE = np.degrees(np.arccos(-1.0 / 3.0))


def ideal_gas(n_frames: int, n_beads: int, length: float, seed: int = 0):
    """Uniform random positions [T, N, 3] and cubic boxes [T, 3, 3] (nm)."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0.0, length, size=(n_frames, n_beads, 3))
    return positions, cubic_boxes(n_frames, length)


def traj(positions: np.ndarray, boxes: np.ndarray, **kwargs) -> Trajectory:
    return Trajectory(positions, boxes, **kwargs)


def cubic_boxes(n_frames: int, length: float) -> np.ndarray:
    return np.tile(np.eye(3) * length, (n_frames, 1, 1))


def jittered_lattice(n_frames: int, seed: int = 1):
    """Structured liquid-like coordinates: 8^3 cubic lattice (3 nm box) with Gaussian noise."""
    rng = np.random.default_rng(seed)
    length, n_side = 3.0, 8
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = grid * (length / n_side) + rng.normal(0.0, 0.02, (n_frames, len(grid), 3))
    # Wrap and round through float32 Angstrom, as MDAnalysis stores them, so both see one input.
    angstrom = (positions % length * ANGSTROM_PER_NM).astype(np.float32).astype(np.float64)
    return angstrom / ANGSTROM_PER_NM, cubic_boxes(n_frames, length)


def brute_force_triplets(
    frame: np.ndarray, length: float, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Python loops over centres i and neighbour pairs j < k within cutoff in a cubic box:
    distances r_ij, r_ik (nm) and angles j-i-k (deg)."""
    r_ij, r_ik, angles = [], [], []
    for i in range(len(frame)):
        bonds = frame - frame[i]
        bonds -= length * np.round(bonds / length)
        near = [b for j, b in enumerate(bonds) if j != i and np.linalg.norm(b) <= cutoff]
        for j in range(len(near)):
            for k in range(j + 1, len(near)):
                u, v = near[j], near[k]
                cosine = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
                r_ij.append(np.linalg.norm(u))
                r_ik.append(np.linalg.norm(v))
                angles.append(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
    return np.array(r_ij), np.array(r_ik), np.array(angles)


def test_rdf_ideal_gas_is_one():
    positions, boxes = ideal_gas(n_frames=20, n_beads=500, length=3.0)
    result = RDF(r_max=1.45, n_bins=58).run(traj(positions, boxes))
    window = (result.x >= 0.3) & (result.x <= 1.4)
    assert abs(result.y[window].mean() - 1.0) < 0.01
    assert np.abs(result.y[window] - 1.0).max() < 0.08
    # Errors are meaningful: residuals are of the size of the error bars.
    pulls = (result.y[window] - 1.0) / result.yerr[window]
    assert 0.3 < np.sqrt(np.mean(pulls**2)) < 3.0


@pytest.mark.parametrize("cross", [False, True], ids=["same-species", "cross-species"])
def test_rdf_matches_mdanalysis_interrdf(cross: bool):
    positions, boxes = jittered_lattice(n_frames=6)
    n_beads = positions.shape[1]
    universe = MDAnalysis.Universe.empty(n_beads, trajectory=False)
    dimensions = np.array([3.0 * ANGSTROM_PER_NM] * 3 + [90.0] * 3, dtype=np.float32)
    universe.load_new(
        (positions * ANGSTROM_PER_NM).astype(np.float32),
        format=MemoryReader,
        dimensions=dimensions,
    )
    r_max, n_bins = 1.4, 70
    if cross:
        types = np.repeat([0, 1], [200, n_beads - 200])
        n_pairs = 200 * (n_beads - 200)
        trajectory = traj(positions, boxes, types=types, type_names=["A", "B"])
        ours = RDF(r_max, n_bins, pair=("A", "B")).run(trajectory)
        theirs = InterRDF(
            universe.atoms[:200], universe.atoms[200:], nbins=n_bins, range=(0.0, 14.0)
        ).run()
    else:
        n_pairs = n_beads * (n_beads - 1) // 2
        ours = RDF(r_max, n_bins).run(traj(positions, boxes))
        theirs = InterRDF(
            universe.atoms, universe.atoms, nbins=n_bins, range=(0.0, 14.0), exclusion_block=(1, 1)
        ).run()
    np.testing.assert_allclose(ours.x * ANGSTROM_PER_NM, theirs.results.bins, rtol=1e-12)
    assert ours.y.max() > 1.3  # structured, so the comparison is not trivially g = 1
    # MDAnalysis's brute-force distances carry float32 rounding (~1e-7 relative), which moves
    # the odd pair sitting on a bin edge; so compare pair counts: at most 2 per bin, 1e-4 overall.
    edges = np.linspace(0.0, r_max, n_bins + 1)
    pairs_per_g = len(positions) * n_pairs / 3.0**3 * 4.0 / 3.0 * np.pi * np.diff(edges**3)
    moved = np.abs(ours.y - theirs.results.rdf) * pairs_per_g
    assert moved.max() <= 2.0 + 1e-6
    assert moved.sum() <= 1e-4 * np.sum(ours.y * pairs_per_g)
    np.testing.assert_allclose(ours.y, theirs.results.rdf, rtol=1e-3, atol=1e-12)


def test_rdf_simple_cubic_lattice_peak_and_onset():
    spacing, n_side = 0.3, 10
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    positions = (grid * spacing)[None] - 0.01  # slightly negative: exercises wrapping
    boxes = cubic_boxes(1, n_side * spacing)
    result = RDF(r_max=1.0, n_bins=45).run(traj(positions, boxes))  # 0.3 nm sits mid-bin
    first = int(np.argmax(result.y > 0))
    assert result.x[first] == pytest.approx(spacing, abs=0.5 * (result.x[1] - result.x[0]))
    assert np.all(result.y[:first] == 0)
    # Six neighbours at the spacing: g = 6 V / ((N - 1) * shell volume).
    n_beads, volume = len(grid), (n_side * spacing) ** 3
    edges = np.linspace(0.0, 1.0, 46)
    shell = 4.0 / 3.0 * np.pi * (edges[first + 1] ** 3 - edges[first] ** 3)
    assert result.y[first] == pytest.approx(6 * volume / ((n_beads - 1) * shell), rel=1e-12)
    assert rdf_onset(result) == result.x[first]


def test_rdf_onset_threshold():
    result = ObservableResult(
        "rdf", [0.1, 0.2, 0.3, 0.4], [0.0, 0.005, 0.5, 1.0], [0.0] * 4, "", ""
    )
    assert rdf_onset(result, threshold=0.01) == pytest.approx(0.3)
    assert rdf_onset(result, threshold=0.001) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="threshold"):
        rdf_onset(result, threshold=2.0)


def test_adf_tetrahedron_across_boundary():
    length, bond = 3.0, 0.3
    vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3.0)
    centre = np.array([0.05, 2.98, 0.1])  # near a corner, so neighbours wrap through the box
    far = np.array([[1.5, 1.5, 1.5], [1.5, 0.6, 2.2], [2.3, 1.4, 0.8]])
    frame = np.vstack([centre, centre + bond * vertices, far])
    result = ADF(cutoff=0.35, n_bins=180).run(traj(frame[None], cubic_boxes(1, length)))
    width = result.x[1] - result.x[0]
    assert np.sum(result.y) * width == pytest.approx(1.0)
    peak = int(np.argmax(result.y))
    assert abs(result.x[peak] - TETRAHEDRAL_ANGLE) <= width / 2
    assert result.y[peak] * width == pytest.approx(1.0)


def test_adf_ideal_gas_follows_sine():
    positions, boxes = ideal_gas(n_frames=10, n_beads=500, length=3.0, seed=2)
    result = ADF(cutoff=0.6, n_bins=36).run(traj(positions, boxes))
    width = result.x[1] - result.x[0]
    assert np.sum(result.y) * width == pytest.approx(1.0)
    # Two independent uniform directions: P(theta) = sin(theta) / 2 per radian.
    edges = np.radians(np.linspace(0.0, 180.0, 37))
    expected = 0.5 * (np.cos(edges[:-1]) - np.cos(edges[1:])) / width
    np.testing.assert_allclose(result.y, expected, atol=0.03 * expected.max())
    assert np.corrcoef(result.y, expected)[0, 1] > 0.999


def test_adf_matches_brute_force_loops():
    rng = np.random.default_rng(5)
    length, cutoff = 1.5, 0.5
    frame = rng.uniform(-0.2, length + 0.2, size=(60, 3))  # some beads outside the box
    result = ADF(cutoff=cutoff, n_bins=30).run(traj(frame[None], cubic_boxes(1, length)))
    _, _, angles = brute_force_triplets(frame, length, cutoff)
    expected, _ = np.histogram(angles, bins=30, range=(0.0, 180.0), density=True)
    np.testing.assert_allclose(result.y, expected, rtol=1e-10, atol=1e-12)


def test_block_errors_non_negative_and_shrink_with_more_frames():
    short = RDF(1.4, 40).run(traj(*ideal_gas(10, 300, 3.0, seed=3)))
    long = RDF(1.4, 40).run(traj(*ideal_gas(80, 300, 3.0, seed=4)))
    assert np.all(short.yerr >= 0) and np.all(long.yerr >= 0)
    window = short.x > 0.3
    assert long.yerr[window].mean() < 0.6 * short.yerr[window].mean()


def test_block_average_weights_and_block_count():
    values = np.array([[2.0], [4.0], [9.0]])
    mean, error = block_average(values, np.array([1.0, 1.0, 3.0]), n_blocks=5)  # 3 blocks
    assert mean[0] == pytest.approx(15.0 / 5.0)
    assert error[0] == pytest.approx(np.std([2.0, 4.0, 3.0], ddof=1) / np.sqrt(3))
    _, single = block_average(values, np.ones(3), n_blocks=1)
    assert single[0] == 0.0


def test_run_frame_selection():
    positions, boxes = ideal_gas(n_frames=6, n_beads=100, length=3.0)
    rdf = RDF(1.0, 10)
    subset = rdf.run(traj(positions, boxes), start=1, stop=5, step=2)
    explicit = rdf.run(traj(positions[[1, 3]], boxes[[1, 3]]))
    np.testing.assert_allclose(subset.y, explicit.y)
    with pytest.raises(ValueError, match="empty"):
        rdf.run(traj(positions, boxes), start=6)


def test_compare_identical_and_different():
    positions, boxes = ideal_gas(n_frames=4, n_beads=300, length=3.0)
    lattice_positions, lattice_boxes = jittered_lattice(n_frames=2)
    rdf = RDF(1.4, 40)
    ref = rdf.run(traj(positions, boxes))
    other = rdf.run(traj(lattice_positions, lattice_boxes))
    scores = compare(ref, {"same": ref, "other": other})
    assert scores["same"] == 0.0
    assert scores["other"] > 0.05
    assert mean_absolute_deviation(ref, other) == scores["other"]
    assert relative_integrated_deviation(ref, ref) == 0.0
    assert relative_integrated_deviation(ref, other) > 0.05
    with pytest.raises(ValueError, match="different x bins"):
        mean_absolute_deviation(ref, RDF(1.4, 41).run(traj(positions, boxes)))


def test_results_round_trip_through_json():
    trajectory = traj(*ideal_gas(3, 100, 3.0))
    for result in (RDF(1.0, 20).run(trajectory), CDF(0.8, 8, 12).run(trajectory)):
        loaded = ObservableResult.from_dict(json.loads(json.dumps(result.to_dict())))
        assert (loaded.name, loaded.x_label, loaded.y_label) == (
            result.name,
            result.x_label,
            result.y_label,
        )
        assert loaded.attrs == result.attrs and loaded.is_2d == result.is_2d
        for field in ("x", "y", "yerr", "x2"):
            np.testing.assert_array_equal(getattr(loaded, field), getattr(result, field))


def test_plot_comparison_writes_png(tmp_path):
    positions, boxes = ideal_gas(n_frames=3, n_beads=200, length=3.0)
    lattice_positions, lattice_boxes = jittered_lattice(n_frames=2)
    rdf, adf = RDF(1.4, 40), ADF(0.5, 36)
    results = {
        "rdf": {
            "AA (mapped)": rdf.run(traj(positions, boxes)),
            "student": rdf.run(traj(lattice_positions, lattice_boxes)),
        },
        "adf": {
            "AA (mapped)": adf.run(traj(positions, boxes)),
            "student": adf.run(traj(lattice_positions, lattice_boxes)),
        },
    }
    path = plot_comparison(results, tmp_path / "figs" / "comparison.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in path.with_suffix(".svg").read_bytes()[:1000]
    cdf = CDF(0.5, 10, 18)
    maps = {
        "AA (mapped)": cdf.run(traj(positions, boxes)),
        "student": cdf.run(traj(lattice_positions, lattice_boxes)),
    }
    assert plot_maps(maps, tmp_path / "cdf.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="plot_maps"):
        plot_comparison({"cdf": maps}, tmp_path / "wrong.png")


def test_rdf_r_max_beyond_half_box_is_rejected():
    positions, boxes = ideal_gas(n_frames=2, n_beads=50, length=3.0)
    with pytest.raises(ValueError, match="r_max"):
        RDF(r_max=1.6, n_bins=10).run(traj(positions, boxes))


@pytest.mark.parametrize(
    ("positions_shape", "box_fix", "match"),
    [
        ((2, 50, 2), None, "positions"),
        ((2, 50, 3), "wrong_frames", "boxes"),
    ],
)
def test_bad_trajectory_input_is_rejected(positions_shape, box_fix, match):
    positions = np.random.default_rng(0).uniform(0.0, 3.0, positions_shape)
    boxes = cubic_boxes(2, 3.0)
    if box_fix == "wrong_frames":
        boxes = boxes[:1]
    with pytest.raises(ValueError, match=match):
        RDF(1.0, 10).run(traj(positions, boxes))


def test_rdf_species_selection_errors():
    positions, boxes = ideal_gas(n_frames=1, n_beads=20, length=3.0)
    with pytest.raises(ValueError, match="types"):
        traj(positions, boxes, types=np.zeros(19, dtype=int))
    one_b = traj(positions, boxes, types=np.r_[np.zeros(19, int), 1], type_names=["A", "B"])
    with pytest.raises(ValueError, match="unknown species 'C'"):
        RDF(1.0, 10, pair=("A", "C")).run(one_b)
    with pytest.raises(ValueError, match="selects 1 and 1 beads"):
        RDF(1.0, 10, pair=("B", "B")).run(one_b)


def test_adf_without_triplets_is_rejected():
    positions = np.array([[[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]]])
    with pytest.raises(ValueError, match=r"two neighbours within cutoff=0\.3 nm"):
        ADF(cutoff=0.3).run(traj(positions, cubic_boxes(1, 3.0)))
    with pytest.raises(ValueError, match=r"two neighbours within r_max=0\.3 nm"):
        CDF(r_max=0.3).run(traj(positions, cubic_boxes(1, 3.0)))


def test_coordination_number_counts_lattice_neighbours_and_ideal_gas_volume():
    spacing, n_side = 0.3, 10
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    lattice = traj((grid * spacing)[None] + 0.05, cubic_boxes(1, n_side * spacing))
    n = coordination_number(RDF(r_max=0.5, n_bins=50).run(lattice))
    # Simple cubic: 6 neighbours at a, 12 more at a sqrt(2) = 0.424 nm.
    assert n.y[n.x < 0.29].max() == 0.0
    np.testing.assert_allclose(n.y[(n.x > 0.31) & (n.x < 0.42)], 6.0, rtol=1e-12)
    np.testing.assert_allclose(n.y[n.x > 0.43], 18.0, rtol=1e-12)
    positions, boxes = ideal_gas(n_frames=10, n_beads=400, length=3.0, seed=7)
    gas = coordination_number(RDF(r_max=1.2, n_bins=24).run(traj(positions, boxes)))
    expected = 399 / 27.0 * 4.0 / 3.0 * np.pi * gas.x**3
    assert np.all(np.abs(gas.y - expected)[gas.x > 0.5] < 4 * gas.yerr[gas.x > 0.5] + 0.02)


def test_species_rdfs_add_up_to_the_total():
    positions, boxes = jittered_lattice(n_frames=3)
    types = np.random.default_rng(3).permutation(np.repeat([0, 1, 2], [100, 150, 262]))
    trajectory = traj(positions, boxes, types=types, type_names=["A", "B", "C"])
    assert species_pairs(trajectory) == [
        ("A", "A"),
        ("A", "B"),
        ("A", "C"),
        ("B", "B"),
        ("B", "C"),
        ("C", "C"),
    ]
    counts = dict(zip("ABC", (100, 150, 262), strict=True))
    total = RDF(1.2, 40).run(trajectory)
    combined = np.zeros_like(total.y)
    for a, b in species_pairs(trajectory):
        n_pairs = counts[a] * (counts[a] - 1) / 2 if a == b else counts[a] * counts[b]
        combined += n_pairs * RDF(1.2, 40, pair=(a, b)).run(trajectory).y
    np.testing.assert_allclose(combined / (512 * 511 / 2), total.y, rtol=1e-12, atol=1e-12)


def test_rdf_matches_mdtraj_compute_rdf():
    import mdtraj

    positions, boxes = jittered_lattice(n_frames=4)
    types = np.repeat([0, 1], [200, 312])
    topology = mdtraj.Topology()
    residue = topology.add_residue("X", topology.add_chain())
    for k in types:
        topology.add_atom(["A", "B"][k], mdtraj.element.Element.getBySymbol("C"), residue)
    md = mdtraj.Trajectory(
        positions,
        topology,
        unitcell_lengths=np.full((4, 3), 3.0),
        unitcell_angles=np.full((4, 3), 90.0),
    )
    ours = RDF(1.4, 70, pair=(0, 1)).run(traj(positions, boxes, types=types))
    r, g = mdtraj.compute_rdf(md, md.top.select_pairs("name A", "name B"), (0.0, 1.4), n_bins=70)
    np.testing.assert_allclose(ours.x, r, rtol=1e-6)
    np.testing.assert_allclose(ours.y, g, rtol=2e-3, atol=1e-9)


def test_cdf_marginal_is_the_adf_and_matches_brute_force():
    rng = np.random.default_rng(11)
    length, r_max = 1.5, 0.5
    frame = rng.uniform(0.0, length, size=(50, 3))
    trajectory = traj(frame[None], cubic_boxes(1, length))
    cdf = CDF(r_max, n_r_bins=10, n_angle_bins=18).run(trajectory)
    adf = ADF(r_max, n_bins=18).run(trajectory)
    dr = cdf.x[1] - cdf.x[0]
    np.testing.assert_allclose(cdf.y.sum(axis=0) * dr, adf.y, rtol=1e-12)
    r_ij, r_ik, angles = brute_force_triplets(frame, length, r_max)
    expected, _, _ = np.histogram2d(
        np.concatenate([r_ij, r_ik]),
        np.concatenate([angles, angles]),
        bins=(10, 18),
        range=((0, r_max), (0, 180)),
        density=True,
    )
    np.testing.assert_allclose(cdf.y, expected, rtol=1e-9, atol=1e-12)


def test_independent_runs_give_the_error_bars():
    first, second = traj(*ideal_gas(5, 300, 3.0, seed=1)), traj(*ideal_gas(5, 300, 3.0, seed=2))
    rdf = RDF(1.2, 24)
    both = rdf.run([first, second])
    assert both.attrs["n_runs"] == 2
    one, two = rdf.run(first), rdf.run(second)
    np.testing.assert_allclose(both.y, 0.5 * (one.y + two.y), rtol=1e-12)
    np.testing.assert_allclose(both.yerr, 0.5 * np.abs(one.y - two.y), rtol=1e-9, atol=1e-15)
    assert np.all(rdf.run([first, first]).yerr == 0.0)
    other = traj(*ideal_gas(5, 299, 3.0))
    with pytest.raises(ValueError, match="independent runs must be of one system"):
        rdf.run([first, other])


def test_dcd_streams_frame_by_frame_in_nm(tmp_path):
    import mdtraj

    positions, boxes = jittered_lattice(n_frames=5)
    topology = mdtraj.Topology()
    residue = topology.add_residue("W", topology.add_chain())
    for _ in range(positions.shape[1]):
        topology.add_atom("W", mdtraj.element.Element.getBySymbol("O"), residue)
    md = mdtraj.Trajectory(
        positions,
        topology,
        unitcell_lengths=np.full((5, 3), 3.0),
        unitcell_angles=np.full((5, 3), 90.0),
    )
    md.save_dcd(str(tmp_path / "t.dcd"))
    md[0].save_pdb(str(tmp_path / "t.pdb"))
    streamed = Trajectory.from_dcd(tmp_path / "t.dcd", tmp_path / "t.pdb", dt=0.5)
    assert (streamed.n_frames, streamed.n_beads, streamed.type_names) == (5, 512, ("W",))
    np.testing.assert_allclose(streamed.frame(3).positions, positions[3], atol=1e-5)
    np.testing.assert_allclose(streamed.frame(3).box, boxes[3], atol=1e-5)
    assert streamed.frame(3).time == 1.5
    from_file = RDF(1.4, 28).run(streamed)
    from_arrays = RDF(1.4, 28).run(traj(positions, boxes))
    np.testing.assert_allclose(from_file.y, from_arrays.y, rtol=1e-3)
    with pytest.raises(FileNotFoundError, match=r"nope\.dcd"):
        Trajectory.from_dcd(tmp_path / "nope.dcd", tmp_path / "t.pdb")


def test_non_finite_frame_is_named():
    positions, boxes = ideal_gas(n_frames=3, n_beads=50, length=3.0)
    positions[2, 7, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2 has NaN"):
        RDF(1.0, 10).run(traj(positions, boxes, name="broken.h5md"))


def test_jensen_shannon_divergence_limits_and_deviation_kinds():
    x = np.linspace(0.5, 179.5, 180)
    narrow = ObservableResult("adf", x, np.exp(-0.5 * ((x - 60) / 5) ** 2), 0 * x, "", "")
    shifted = ObservableResult("adf", x, np.exp(-0.5 * ((x - 120) / 5) ** 2), 0 * x, "", "")
    scaled = ObservableResult("adf", x, 3.0 * narrow.y, 0 * x, "", "")
    assert jensen_shannon_divergence(narrow, scaled) == pytest.approx(0.0, abs=1e-12)
    assert jensen_shannon_divergence(narrow, shifted) == pytest.approx(1.0, abs=1e-6)
    half = ObservableResult("adf", x, narrow.y + shifted.y, 0 * x, "", "")
    # Q puts half its mass on P's peak, half elsewhere; M = (P + Q) / 2 is 3/4 and 1/4 there:
    # KL(P|M) = log2(4/3), KL(Q|M) = 1/2 log2(2/3) + 1/2 log2(2).
    expected = 0.5 * (np.log2(4 / 3) + 0.5 * np.log2(2 / 3) + 0.5)
    assert jensen_shannon_divergence(narrow, half) == pytest.approx(expected, rel=1e-6)
    assert set(deviation(narrow, shifted)) == {"JSD"}
    rdf = ObservableResult("rdf A-B", x, narrow.y, 0 * x, "", "")
    assert set(deviation(rdf, rdf)) == {"MAD", "rel. deviation"}
    msd_ref = ObservableResult("msd", x, x, 0 * x, "", "", attrs={"D": 2.0, "D_err": 0.2})
    msd_cg = ObservableResult("msd", x, x, 0 * x, "", "", attrs={"D": 6.0, "D_err": 0.3})
    metrics = deviation(msd_ref, msd_cg)
    assert metrics["D ratio"] == pytest.approx(3.0)
    assert metrics["D ratio err"] == pytest.approx(3.0 * np.hypot(0.1, 0.05))


def test_cdf_r_min_trims_the_map_but_not_the_normalisation():
    positions, boxes = ideal_gas(n_frames=2, n_beads=300, length=3.0, seed=9)
    trajectory = traj(positions, boxes)
    full = CDF(0.6, n_r_bins=12, n_angle_bins=18).run(trajectory)
    trimmed = CDF(0.6, n_r_bins=6, n_angle_bins=18, r_min=0.3).run(trajectory)
    np.testing.assert_allclose(trimmed.y, full.y[6:], rtol=1e-12)
    with pytest.raises(ValueError, match="r_min"):
        CDF(0.6, r_min=0.7)


def test_adf_of_fcc_has_its_four_angles_in_known_proportions():
    """The 12 nearest neighbours of an fcc site form 66 pairs: 24 at 60 deg, 12 at 90,
    24 at 120 and 6 at 180."""
    a, n_cells = 0.4, 4
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = ((cells[:, None, :] + basis[None]) * a).reshape(-1, 3) - 0.03
    trajectory = traj(sites[None], cubic_boxes(1, n_cells * a))
    # Cutoff between the first (a / sqrt 2) and second (a) shells; 35 bins keep the four
    # angles off the bin edges.
    result = ADF(cutoff=0.85 * a, n_bins=35).run(trajectory)
    width = result.x[1] - result.x[0]
    bins = {angle: min(int(angle // width), 34) for angle in (60, 90, 120, 180)}
    expected = {60: 24 / 66, 90: 12 / 66, 120: 24 / 66, 180: 6 / 66}
    for angle, index in bins.items():
        assert result.y[index] * width == pytest.approx(expected[angle], rel=1e-12)
    assert np.sum(result.y * width) == pytest.approx(1.0)
