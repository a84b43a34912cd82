"""cgkd.geometry against brute force over periodic images, in orthorhombic and triclinic boxes
(OpenMM's reduced form), and its orthorhombic fast path against its general path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cgkd.geometry import (
    TriclinicBoxError,
    box_volume,
    box_widths,
    closest_distance,
    cross_distances,
    distance_histogram,
    make_whole,
    minimum_image,
    minimum_image_batch,
    nearest_neighbours,
    pair_vectors,
    radial_histogram,
    wrap,
)
from cgkd.geometry.pairs import _cell_list_pairs
from cgkd.observables import (
    RDF,
    NotComputableError,
    StructureFactor,
    TetrahedralOrder,
    Trajectory,
)

ORTHORHOMBIC = np.diag([3.1, 2.7, 3.6])
# Reduced form, off-diagonals up to 0.45 of the diagonal: perpendicular widths ~2.6-3.2 nm.
SKEWED = np.array([[3.0, 0.0, 0.0], [1.3, 2.8, 0.0], [-1.2, 1.3, 3.2]])
BOXES = {"orthorhombic": ORTHORHOMBIC, "triclinic": SKEWED}
# Every lattice translation n @ box with integer n in [-3, 3]^3.
SHIFTS = np.array(list(itertools.product(range(-3, 4), repeat=3)), dtype=np.float64)


def shortest_image(vectors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The shortest of the images v - n @ box over all n in [-3, 3]^3, by brute force."""
    flat = vectors.reshape(-1, 3)
    result = np.empty_like(flat)
    for start in range(0, len(flat), 4096):
        images = flat[start : start + 4096, None] - SHIFTS @ box  # [chunk, 343, 3]
        best = np.argmin(np.sum(images * images, axis=-1), axis=-1)
        result[start : start + 4096] = images[np.arange(len(images)), best]
    return result.reshape(vectors.shape)


def random_points(n: int, box: np.ndarray, seed: int) -> np.ndarray:
    """``n`` points spread over the box and some of its neighbouring images, nm."""
    return np.random.default_rng(seed).uniform(-0.5, 1.5, (n, 3)) @ box


def brute_pairs(positions: np.ndarray, box: np.ndarray, cutoff: float) -> dict:
    """{(i, j): shortest x_j - x_i} for every pair i < j closer than ``cutoff``."""
    i, j = np.triu_indices(len(positions), 1)
    vectors = shortest_image(positions[j] - positions[i], box)
    close = np.linalg.norm(vectors, axis=1) < cutoff
    return {(a, b): v for a, b, v in zip(i[close], j[close], vectors[close], strict=True)}


@pytest.mark.parametrize("name", BOXES)
def test_minimum_image_is_the_shortest_image(name):
    box = BOXES[name]
    rng = np.random.default_rng(0)
    # Short separations (below half the smallest width) shifted by random lattice vectors.
    short = rng.normal(size=(500, 3))
    short *= rng.uniform(0.0, 0.49 * box_widths(box).min(), (500, 1)) / np.linalg.norm(
        short, axis=1, keepdims=True
    )
    vectors = short + rng.integers(-2, 3, (500, 3)) @ box
    expected = shortest_image(vectors, box)
    np.testing.assert_allclose(minimum_image(vectors, box), expected, atol=1e-12)
    per_frame = minimum_image(vectors[:, None], np.stack([box] * 500))  # [T, K=1, 3], [T, 3, 3]
    np.testing.assert_allclose(per_frame[:, 0], expected, atol=1e-12)
    batch = minimum_image_batch(torch.from_numpy(vectors)[None], torch.from_numpy(box)[None])
    np.testing.assert_allclose(batch[0].numpy(), expected, atol=1e-12)


def test_orthorhombic_minimum_image_equals_the_general_path():
    vectors = np.random.default_rng(1).uniform(-7.0, 7.0, (1000, 3))
    general = vectors - np.round(vectors @ np.linalg.inv(ORTHORHOMBIC)) @ ORTHORHOMBIC
    np.testing.assert_array_equal(minimum_image(vectors, ORTHORHOMBIC), general)


def test_box_widths_and_volume_of_both_paths_agree():
    tilted = ORTHORHOMBIC.copy()
    tilted[2, 0] = 1e-9  # above the tolerance: the general path
    np.testing.assert_allclose(box_widths(tilted), np.diag(ORTHORHOMBIC), rtol=1e-12)
    assert box_volume(tilted) == pytest.approx(np.prod(np.diag(ORTHORHOMBIC)), rel=1e-12)
    a, b, c = SKEWED
    assert box_volume(SKEWED) == pytest.approx(abs(np.dot(a, np.cross(b, c))), rel=1e-12)
    assert box_widths(SKEWED)[2] == pytest.approx(SKEWED[2, 2], rel=1e-12)  # c_z: height


def test_whole_molecules_across_a_triclinic_boundary():
    rng = np.random.default_rng(2)
    n_frames, n_molecules, size = 3, 40, 4
    boxes = np.stack([SKEWED * s for s in (1.0, 1.02, 0.98)])
    centres = rng.uniform(0.0, 1.0, (n_frames, n_molecules, 1, 3)) @ boxes[:, None]
    shape = rng.uniform(-0.35, 0.35, (n_frames, n_molecules, size, 3))
    molecules = (centres + shape).reshape(n_frames, n_molecules * size, 3)
    broken = wrap(molecules, boxes)
    fractional = broken @ np.linalg.inv(boxes)
    assert fractional.min() >= 0.0 and fractional.max() < 1.0
    internal = (molecules - molecules[:, ::size].repeat(size, axis=1)).reshape(-1, 3)
    apart = (broken - broken[:, ::size].repeat(size, axis=1)).reshape(-1, 3)
    assert np.abs(apart - internal).max() > 1.0, "no molecule crossed the boundary"
    reference = np.repeat(np.arange(n_molecules) * size, size)
    whole = make_whole(broken, boxes, reference)
    rebuilt = (whole - whole[:, ::size].repeat(size, axis=1)).reshape(-1, 3)
    np.testing.assert_allclose(rebuilt, internal, atol=1e-12)
    np.testing.assert_allclose(whole[:, ::size], broken[:, ::size], atol=0)


@pytest.mark.parametrize("name", BOXES)
def test_pair_vectors_match_brute_force(name):
    box, cutoff = BOXES[name], 1.1
    positions = random_points(300, box, seed=3)
    first, second, vectors = pair_vectors(positions, box, cutoff)
    assert np.all(first < second)
    expected = brute_pairs(positions, box, cutoff)
    found = {(a, b): v for a, b, v in zip(first, second, vectors, strict=True)}
    assert found.keys() == expected.keys() and len(first) == len(found)
    for key, vector in found.items():
        np.testing.assert_allclose(vector, expected[key], atol=1e-12)


def test_orthorhombic_pairs_equal_the_cell_list_path():
    positions = random_points(400, ORTHORHOMBIC, seed=4)
    kd_tree = pair_vectors(positions, ORTHORHOMBIC, 1.2)
    cells = _cell_list_pairs(positions, ORTHORHOMBIC, 1.2)
    order = [np.lexsort((f, s)) for f, s, _ in (kd_tree, cells)]
    for a, b in zip(kd_tree, cells, strict=True):
        np.testing.assert_allclose(a[order[0]], b[order[1]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", BOXES)
def test_cross_distances_and_histograms_match_brute_force(name):
    box, cutoff = BOXES[name], 1.2
    positions = random_points(250, box, seed=5)
    a, b = np.arange(0, 100), np.arange(100, 250)
    separations = positions[b][None] - positions[a][:, None]
    brute = np.linalg.norm(shortest_image(separations, box), axis=-1).ravel()
    brute = np.sort(brute[brute < cutoff])
    np.testing.assert_allclose(
        np.sort(cross_distances(positions[a], positions[b], box, cutoff)), brute
    )
    edges = np.linspace(0.0, cutoff, 25)
    counts = distance_histogram(brute, edges)
    np.testing.assert_array_equal(counts[0], np.histogram(brute, edges)[0])
    groups = (brute > 0.6).astype(int)
    split = distance_histogram(brute, edges, groups, 2)
    np.testing.assert_array_equal(split.sum(0), counts[0])
    assert split[1, : np.searchsorted(edges, 0.6) - 1].sum() == 0
    # g(r): the counts over the ideal-gas counts.
    g, density = radial_histogram(positions, box, a, b, edges)
    volume = abs(np.linalg.det(box))
    shells = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    np.testing.assert_allclose(g, counts[0] / (100 * 150 / volume * shells), rtol=1e-12)
    assert density == pytest.approx(150 / volume, rel=1e-12)


def test_distance_histogram_bins_like_numpy_at_the_edges():
    edges = np.linspace(0.0, 1.0, 11)
    distances = np.r_[edges, 1.0 + 1e-12, -1e-12, np.nextafter(edges[3], 0.0)]
    np.testing.assert_array_equal(
        distance_histogram(distances, edges)[0], np.histogram(distances, edges)[0]
    )


def test_closest_distance_and_nearest_neighbours():
    positions = random_points(120, SKEWED, seed=6)
    brute = brute_pairs(positions, SKEWED, 10.0)
    shortest = min(np.linalg.norm(v) for v in brute.values())
    assert closest_distance(positions, SKEWED, 1.0) == pytest.approx(shortest, abs=1e-12)
    assert closest_distance(positions, SKEWED, 0.5 * shortest) == float("inf")
    cubic = random_points(120, ORTHORHOMBIC, seed=7)
    indices, distances, vectors = nearest_neighbours(cubic[:10], cubic, ORTHORHOMBIC, 3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(10))  # each finds itself first
    separations = shortest_image(cubic[None] - cubic[:10, None], ORTHORHOMBIC)
    expected = np.sort(np.linalg.norm(separations, axis=-1), axis=1)[:, :3]
    np.testing.assert_allclose(distances, expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), distances, atol=1e-12)
    with pytest.raises(TriclinicBoxError, match="orthorhombic"):
        nearest_neighbours(positions, positions, SKEWED, 2)


def test_observables_in_a_triclinic_box_work_or_say_why_not():
    positions = np.stack([random_points(200, SKEWED, seed=s) for s in (8, 9)])
    boxes = np.stack([SKEWED, SKEWED])
    trajectory = Trajectory(positions, boxes, dt=1.0)
    rdf = RDF(1.2, 12).run(trajectory, n_blocks=1)
    edges = np.linspace(0.0, 1.2, 13)
    expected = np.zeros(12)
    for frame in positions:
        i, j = np.triu_indices(len(frame), 1)
        distances = np.linalg.norm(shortest_image(frame[j] - frame[i], SKEWED), axis=1)
        volume = abs(np.linalg.det(SKEWED))
        shells = 4.0 / 3.0 * np.pi * np.diff(edges**3)
        expected += np.histogram(distances, edges)[0] / (200 * 199 / 2 / volume * shells) / 2
    np.testing.assert_allclose(rdf.y, expected, rtol=1e-12)
    for observable in (TetrahedralOrder(), StructureFactor(20.0, 10)):
        with pytest.raises(NotComputableError, match="needs an orthorhombic box"):
            observable.run(trajectory)
