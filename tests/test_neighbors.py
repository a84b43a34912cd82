"""The periodic neighbour search against a brute-force reference, its errors, gradients and
TorchScript form."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from cgkd.geometry import cell_counts, pair_search
from cgkd.models.neighbors import canonical_order, neighbor_pairs

CUTOFF = 0.6
ORTHORHOMBIC = [[3.1, 0.0, 0.0], [0.0, 2.5, 0.0], [0.0, 0.0, 4.3]]
# OpenMM reduced form with off-diagonals 0.4-0.45 of the diagonal: 4, 4, 5 cells.
SKEWED = [[3.0, 0.0, 0.0], [1.3, 2.8, 0.0], [-1.2, 1.3, 3.2]]
# Perpendicular widths 1.23, 2.72, 2.6 nm: 2, 4, 4 cells.
THIN = [[1.3, 0.0, 0.0], [0.5, 3.0, 0.0], [0.6, -1.2, 2.6]]
# Small and skewed: 2, 3, 2 cells.
SMALL_SKEWED = [[2.6, 0.0, 0.0], [1.1, 2.5, 0.0], [-1.0, 1.1, 1.4]]
# Barely wider than twice the cutoff: one cell along each vector.
ONE_CELL = np.eye(3) * 2 * CUTOFF * (1 + 2e-6)


def brute_force(positions: np.ndarray, boxes: np.ndarray, cutoff: float) -> dict:
    """{(frame, i, j): x_j - x_i at its shortest periodic image} for every ordered pair of
    distinct beads closer than ``cutoff``, from all 27 images of the wrapped positions.

    (For wrapped positions the image within the cutoff, if any, is one of these 27 when
    the cutoff is below half the box widths.)"""
    images = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
    expected = {}
    for frame, (x, box) in enumerate(zip(positions, boxes, strict=True)):
        x, box = np.asarray(x, dtype=np.float64), np.asarray(box, dtype=np.float64)
        wrapped = x - np.floor(np.linalg.solve(box.T, x.T).T) @ box
        translations = images @ box
        for i in range(len(x)):
            # [j, image, 3]: every other bead at every image.
            candidates = wrapped[:, None, :] + translations[None] - wrapped[i]
            lengths = np.linalg.norm(candidates, axis=-1)
            shortest = np.argmin(lengths, axis=1)
            for j in range(len(x)):
                if j != i and lengths[j, shortest[j]] < cutoff:
                    expected[(frame, i, j)] = candidates[j, shortest[j]]
    return expected


def found_pairs(positions: torch.Tensor, boxes: torch.Tensor, cutoff: float, method: str):
    """neighbor_pairs as {(frame, i, j): vector}, after checking no pair is listed twice."""
    n_beads = positions.shape[1]
    first, second, vectors = neighbor_pairs(positions, boxes, cutoff, method)
    assert first.shape == second.shape == vectors.shape[:1]
    frames = (first // n_beads).tolist()
    assert frames == (second // n_beads).tolist()
    keys = [
        (f, i % n_beads, j % n_beads)
        for f, i, j in zip(frames, first.tolist(), second.tolist(), strict=True)
    ]
    assert len(set(keys)) == len(keys), "a pair is listed twice"
    return dict(zip(keys, vectors.detach().numpy(), strict=True))


def assert_matches_brute_force(positions, boxes, cutoff=CUTOFF, atol=1e-10):
    positions = np.asarray(positions)
    boxes = np.asarray(boxes)
    expected = brute_force(positions, boxes, cutoff)
    assert len(expected) > 0
    for method in ("cells", "all_pairs"):
        found = found_pairs(torch.as_tensor(positions), torch.as_tensor(boxes), cutoff, method)
        assert found.keys() == expected.keys(), method
        for key, vector in expected.items():
            np.testing.assert_allclose(found[key], vector, atol=atol, err_msg=method)


def uniform(n_beads: int, box, seed: int) -> np.ndarray:
    """[N, 3] positions uniform in the box (overlaps allowed)."""
    return np.random.default_rng(seed).uniform(0, 1, (n_beads, 3)) @ np.asarray(box)


@pytest.mark.parametrize(
    ("box", "expected_cells"),
    [
        (ORTHORHOMBIC, [5, 4, 7]),
        (SKEWED, [4, 4, 5]),
        (THIN, [2, 4, 4]),
        (SMALL_SKEWED, [2, 3, 2]),
        (ONE_CELL, [1, 1, 1]),
    ],
    ids=["orthorhombic", "skewed", "thin", "small-skewed", "one-cell"],
)
def test_pairs_match_brute_force(box, expected_cells):
    box = np.asarray(box, dtype=np.float64)
    cells = cell_counts(torch.as_tensor(box).unsqueeze(0), CUTOFF)
    assert cells.tolist() == [expected_cells]
    volume = abs(np.linalg.det(box))
    n_beads = min(400, int(12 * volume))  # 12 beads/nm^3: ~10 neighbours each
    assert_matches_brute_force(uniform(n_beads, box, seed=1)[None], box[None])


def test_batch_of_frames_with_different_boxes():
    boxes = np.array([ORTHORHOMBIC, SKEWED, THIN], dtype=np.float64)
    positions = np.stack([uniform(150, box, seed) for seed, box in enumerate(boxes)])
    assert_matches_brute_force(positions, boxes)
    # The test can fail: with frame 0's box for every frame the pairs differ.
    same_box = brute_force(positions, boxes[[0, 0, 0]], CUTOFF)
    assert same_box.keys() != brute_force(positions, boxes, CUTOFF).keys()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_beads_on_cell_boundaries_and_outside_the_box(dtype):
    # Cutoff 0.59 nm in a 3 nm cube: 5 cells, 0.6 nm wide. A 0.3 nm lattice puts beads on
    # every cell face and at s = 0; no lattice distance equals the cutoff.
    cutoff, edge = 0.59, 3.0
    box = np.eye(3) * edge
    assert cell_counts(torch.as_tensor(box).unsqueeze(0), cutoff).tolist() == [[5, 5, 5]]
    rng = np.random.default_rng(7)
    lattice = np.array(list(itertools.product(range(10), repeat=3))) * 0.3
    positions = lattice[rng.choice(len(lattice), 250, replace=False)]
    # Periodic images: far outside the box, negative, and exactly at the upper face.
    positions[:60] += rng.integers(-3, 4, (60, 3)) * edge
    positions[60:70, 0] = edge
    positions[70:80, 1] = -1e-17  # wraps to s = 1.0 exactly in float64
    positions[80:90, 2] = edge - 1e-6
    positions = torch.as_tensor(positions, dtype=dtype).numpy()
    atol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_matches_brute_force(positions[None], box[None].astype(positions.dtype), cutoff, atol)


def test_float32_liquid_in_a_skewed_box():
    box = np.asarray(SKEWED, dtype=np.float32)
    positions = (uniform(400, SKEWED, seed=4) - 5.0).astype(np.float32)  # mostly outside
    assert_matches_brute_force(positions[None], box[None], atol=2e-5)


@pytest.mark.parametrize(
    ("box", "width"),
    [
        (np.eye(3) * 1.1, 1.1),
        (np.eye(3) * 1.1234567, 1.1234567),  # printed rounded
        (np.eye(3) * 2 * CUTOFF, 2 * CUTOFF),  # exactly half is refused too
        # Box vectors 2 nm and 1.35 nm long, but only 1.0 nm between the faces.
        ([[2.0, 0.0, 0.0], [0.9, 1.0, 0.0], [0.3, 0.0, 2.5]], 1.0),
    ],
)
def test_cutoff_not_below_half_the_box_width_is_refused(box, width):
    box = torch.as_tensor(box, dtype=torch.float64).unsqueeze(0)
    positions = torch.zeros(1, 4, 3, dtype=torch.float64)
    message = (
        r"cutoff 0.6 nm is not below half the smallest box width \((\S+) nm, half of (\S+) nm\); "
        r".*smaller cutoff"
    )
    with pytest.raises(ValueError, match=message) as error:
        neighbor_pairs(positions, box, CUTOFF)
    reported = re.search(message, str(error.value))
    assert reported is not None
    # Rounded to 4 digits: half the width, then the width itself.
    assert float(reported.group(1)) == pytest.approx(0.5 * width, rel=1e-3)
    assert float(reported.group(2)) == pytest.approx(width, rel=1e-3)
    assert len(reported.group(2)) <= 5
    # The test can fail: a slightly smaller cutoff is accepted.
    neighbor_pairs(positions, box, 0.499 * width)


def test_the_potential_refuses_a_box_too_small_for_its_cutoff(potential, liquid):
    positions, box, species = liquid  # a 1.5 nm box: accepted
    assert torch.isfinite(potential(positions, box, species)).all()
    with pytest.raises(
        ValueError, match=r"cutoff 0\.6 nm .* width \(0\.592 nm, half of 1\.185 nm\)"
    ):
        potential(positions * 0.79, box * 0.79, species)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown neighbour search method 'grid'"):
        neighbor_pairs(torch.zeros(1, 2, 3), torch.eye(3).unsqueeze(0) * 2, CUTOFF, "grid")


def test_vectors_are_differentiable():
    box = torch.tensor(SKEWED, dtype=torch.float64).unsqueeze(0)
    positions = torch.as_tensor(uniform(60, SKEWED, seed=2)).unsqueeze(0) - 1.0
    positions.requires_grad_(True)

    def vectors(x):
        return neighbor_pairs(x, box, CUTOFF)[2]

    assert vectors(positions).shape[0] > 50
    assert torch.autograd.gradcheck(vectors, (positions,), eps=1e-6, atol=1e-8)
    # d/dx_i of sum over listed pairs |v|^2 / 2 is -2 sum_j v_ij (each pair twice).
    first, _, v = neighbor_pairs(positions, box, CUTOFF)
    (gradient,) = torch.autograd.grad(0.5 * (v * v).sum(), positions)
    analytic = torch.zeros(60, 3, dtype=torch.float64).index_add(0, first, -2 * v.detach())
    torch.testing.assert_close(gradient[0], analytic, rtol=1e-12, atol=1e-12)
    assert analytic.abs().max() > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchscript_gives_the_eager_result(dtype):
    scripted = torch.jit.script(neighbor_pairs)
    boxes = torch.tensor([SKEWED, ORTHORHOMBIC], dtype=dtype)
    positions = torch.stack(
        [torch.as_tensor(uniform(200, box, seed=9), dtype=dtype) for box in boxes.numpy()]
    )
    eager = neighbor_pairs(positions, boxes, CUTOFF)
    script = scripted(positions, boxes, CUTOFF)
    assert eager[0].numel() > 1000
    for a, b in zip(eager, script, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(
        neighbor_pairs(positions, boxes, CUTOFF, "all_pairs"),
        scripted(positions, boxes, CUTOFF, "all_pairs"),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["cells", "all_pairs"])
def test_pairs_are_sorted_by_first_then_second_bead(method):
    boxes = torch.tensor([SKEWED, ORTHORHOMBIC, THIN], dtype=torch.float64)
    positions = torch.stack(
        [torch.as_tensor(uniform(150, box, seed)) for seed, box in enumerate(boxes.numpy())]
    )
    first, second, vectors = neighbor_pairs(positions, boxes, CUTOFF, method)
    keys = (first * 450 + second).tolist()
    assert len(keys) > 1000
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # The vectors travel with their pairs: x_second - x_first plus a lattice vector, within
    # the cutoff.
    flat, pair_boxes = positions.reshape(-1, 3), boxes[first // 150]
    shifts = torch.linalg.solve(pair_boxes.transpose(1, 2), flat[second] - flat[first] - vectors)
    torch.testing.assert_close(shifts, torch.round(shifts), rtol=0, atol=1e-9)
    assert float(torch.linalg.norm(vectors, dim=1).max()) < CUTOFF


def test_canonical_order_sorts_by_first_then_second():
    generator = torch.Generator().manual_seed(3)
    first = torch.randint(0, 50, (400,), generator=generator)
    second = torch.randint(0, 50, (400,), generator=generator)
    for order in (
        canonical_order(first, second, 50),
        torch.jit.script(canonical_order)(first, second, 50),
    ):
        assert sorted(order.tolist()) == list(range(400))
        pairs = list(zip(first[order].tolist(), second[order].tolist(), strict=True))
        assert pairs == sorted(pairs)
    # The test can fail: the pairs were not sorted to begin with.
    assert list(zip(first.tolist(), second.tolist(), strict=True)) != pairs


def test_candidates_grow_linearly_with_the_number_of_beads():
    candidates = {}
    for n_beads in (500, 4000):
        edge = (n_beads / 33.4) ** (1 / 3)
        positions = torch.rand(1, n_beads, 3, generator=torch.Generator().manual_seed(0)) * edge
        boxes = torch.eye(3).unsqueeze(0) * edge
        candidates[n_beads] = pair_search(positions, boxes, CUTOFF)[2]
    # 8x the beads: 8x the candidates (up to the cell size rounding), not 64x.
    assert 6 < candidates[4000] / candidates[500] < 10
    assert candidates[4000] < 0.1 * 4000**2
