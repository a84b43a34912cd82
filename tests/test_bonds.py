"""Bond-length distributions of multi-bead CG molecules and the share of bonds outside the
reference's range: against lengths drawn before the beads were wrapped into the box."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from cgkd.observables import NotComputableError, Trajectory, deviation
from cgkd.observables.bonds import BondLengths, build_bond_lengths
from cgkd.observables.compare import outside_fraction
from cgkd.observables.settings import AnalysisSettings
from cgkd.observables.suite import evaluate

BOX = 2.0  # nm


def dimers(
    lengths: np.ndarray, types: list[int] | None = None, seed: int = 0
) -> tuple[Trajectory, np.ndarray]:
    """Dimers whose bond lengths are ``lengths`` [T, M] (nm), in random directions, wrapped
    into a cubic box (many bonds cross its faces); the trajectory and its bonds [M, 2]."""
    rng = np.random.default_rng(seed)
    n_frames, n_dimers = lengths.shape
    first = rng.uniform(0.0, BOX, (n_frames, n_dimers, 3))
    direction = rng.normal(size=(n_frames, n_dimers, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    second = first + lengths[..., None] * direction
    positions = np.stack([first, second], axis=2).reshape(n_frames, 2 * n_dimers, 3) % BOX
    bonds = np.arange(2 * n_dimers).reshape(n_dimers, 2)
    boxes = np.tile(np.eye(3) * BOX, (n_frames, 1, 1))
    types = np.zeros(2 * n_dimers, np.int64) if types is None else np.asarray(types)
    names = [chr(ord("A") + k) for k in range(int(types.max()) + 1)]
    trajectory = Trajectory(positions, boxes, types=types, type_names=names, bonds=bonds, dt=1.0)
    return trajectory, bonds


def gaussian_lengths(mean: float, n_frames: int = 20, n_dimers: int = 50, seed: int = 0):
    return np.random.default_rng(seed).normal(mean, 0.01, (n_frames, n_dimers))


def test_the_distribution_is_the_histogram_of_the_true_lengths_across_the_box_faces():
    lengths = gaussian_lengths(0.3)
    trajectory, _ = dimers(lengths)
    result = BondLengths(r_max=0.6, n_bins=60).run(trajectory)
    expected, _ = np.histogram(lengths, bins=np.linspace(0.0, 0.6, 61), density=True)
    np.testing.assert_allclose(result.y, expected, atol=1e-9)
    assert np.sum(result.y) * 0.01 == pytest.approx(1.0)
    assert result.attrs["mean"] == pytest.approx(lengths.mean(), abs=1e-9)
    assert result.attrs["n_bonds"] == 50


def test_a_bond_longer_than_r_max_still_counts_in_the_last_bin():
    lengths = np.full((2, 4), 0.3)
    lengths[:, 0] = 0.9  # stretched past r_max
    result = BondLengths(r_max=0.6, n_bins=6).run(dimers(lengths)[0])
    assert np.sum(result.y) * 0.1 == pytest.approx(1.0)
    assert result.y[-1] * 0.1 == pytest.approx(0.25)


def test_each_bonded_species_pair_gets_its_own_distribution():
    lengths = gaussian_lengths(0.3, n_dimers=40)
    lengths[:, 20:] += 0.15  # the B-B bonds are longer
    types = [0, 1] * 20 + [1, 1] * 20
    trajectory, _ = dimers(lengths, types)
    built = {b.name: b for b in build_bond_lengths(0.6, 60, trajectory)}
    assert sorted(built) == ["bonds", "bonds A-B", "bonds B-B"]
    means = {name: b.run(trajectory).attrs["mean"] for name, b in built.items()}
    assert means["bonds A-B"] == pytest.approx(lengths[:, :20].mean(), abs=1e-9)
    assert means["bonds B-B"] == pytest.approx(lengths[:, 20:].mean(), abs=1e-9)
    assert means["bonds"] == pytest.approx(lengths.mean(), abs=1e-9)


def test_the_share_outside_the_reference_range_finds_drifted_bonds():
    reference = BondLengths().run(dimers(gaussian_lengths(0.3, seed=1))[0])
    same = BondLengths().run(dimers(gaussian_lengths(0.3, seed=2))[0])
    drifted_lengths = gaussian_lengths(0.3, seed=3)
    drifted_lengths[:, :10] = 0.22  # a fifth of the molecules settled at a length AA never has
    drifted = BondLengths().run(dimers(drifted_lengths)[0])
    assert outside_fraction(reference, same) < 0.01
    assert outside_fraction(reference, drifted) == pytest.approx(0.2, abs=0.01)
    metrics = deviation(reference, drifted)
    assert metrics["outside AA range"] == pytest.approx(0.2, abs=0.01)
    assert metrics["mean diff."] == pytest.approx(-0.2 * 0.08, abs=2e-3)
    assert metrics["JSD"] > deviation(reference, same)["JSD"]


def test_a_model_inside_the_reference_range_has_exactly_none_outside():
    """The share is summed over the bins outside, so rounding cannot make it 1e-16 or -2e-16
    (which a check ``0 <= share`` then refuses) for a model that never leaves the range."""
    reference = BondLengths().run(dimers(gaussian_lengths(0.3, seed=1))[0])
    for seed in (2, 6, 7):  # 1 - (share inside) rounds to 1.1e-16 for seeds 6 and 7
        narrow_lengths = 0.3 + 0.2 * (gaussian_lengths(0.3, seed=seed) - 0.3)
        assert outside_fraction(reference, BondLengths().run(dimers(narrow_lengths)[0])) == 0.0


def test_the_suite_measures_bonds_only_where_there_are_some():
    settings = OmegaConf.to_container(OmegaConf.structured(AnalysisSettings()))
    with_bonds, _ = dimers(gaussian_lengths(0.3, n_frames=10))
    without = Trajectory(with_bonds.frame(0).positions[None], with_bonds.frame(0).box[None])
    assert with_bonds.bonds.shape == (50, 2)
    assert "bonds" in evaluate(settings, with_bonds).results
    analysis = evaluate(settings, without)
    assert not any(name.startswith("bonds") for name in [*analysis.results, *analysis.skipped])


def test_bonds_of_another_system_or_species_pair_are_refused():
    trajectory, bonds = dimers(gaussian_lengths(0.3, n_frames=2, n_dimers=3), [0, 1] * 3)
    with pytest.raises(ValueError, match=r"bonds name beads 0\.\.9, but there are 6"):
        Trajectory(np.zeros((1, 6, 3)), np.eye(3)[None] * BOX, bonds=np.vstack([bonds, [[8, 9]]]))
    with pytest.raises(NotComputableError, match=r"bonds B-B: .* has no such bonds"):
        BondLengths(pair=("B", "B")).run(trajectory)
