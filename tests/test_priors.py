"""Priors: Boltzmann inversion recovers known force constants, bonded terms are conservative
and invariant, the repulsion skips bonded pairs, RDF onsets match the RDF observable, and CG
bonds follow the covalent bonds of the mapped molecules."""

from __future__ import annotations

import math
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
import torch
from conftest import random_liquid
from scipy.spatial.transform import Rotation

from cgkd.mapping.definition import MappingSpec, compile_mapping
from cgkd.models.priors import (
    CGTopology,
    HarmonicAngles,
    HarmonicBonds,
    boltzmann_harmonic,
    build_priors,
    fit_priors,
    rdf_onsets,
)
from cgkd.observables.rdf import RDF, rdf_onset
from cgkd.observables.trajectory import Trajectory

KT = 2.494  # kJ/mol at 300 K
TEMPLATES = Path(__file__).resolve().parent.parent / "cgkd" / "systems" / "templates"


def sample(density, low: float, high: float, n: int, seed: int) -> np.ndarray:
    """Rejection samples of an unnormalised 1D density on [low, high]."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(low, high, 2001)
    ceiling = 1.05 * density(grid).max()
    out = []
    while sum(len(c) for c in out) < n:
        x = rng.uniform(low, high, 4 * n)
        out.append(x[rng.uniform(0, ceiling, len(x)) < density(x)])
    return np.concatenate(out)[:n]


def test_boltzmann_inversion_recovers_a_harmonic_bond_with_its_r2_jacobian():
    r0, k = 0.32, 3000.0  # nm, kJ/mol/nm^2
    width = math.sqrt(KT / k)
    bonds = sample(
        lambda r: r**2 * np.exp(-0.5 * k * (r - r0) ** 2 / KT),
        r0 - 6 * width,
        r0 + 6 * width,
        200_000,
        seed=1,
    )
    centre, constant = boltzmann_harmonic(bonds, KT, "bond")
    assert centre == pytest.approx(r0, abs=0.002)
    assert constant == pytest.approx(k, rel=0.05)
    # Ignoring the r^2 Jacobian would shift the centre outwards: the fit must not.
    assert abs(centre - r0) < abs(bonds.mean() - r0) + 1e-4


def test_boltzmann_inversion_recovers_a_harmonic_angle_with_its_sine_jacobian():
    theta0, k = 2.0, 40.0  # rad, kJ/mol/rad^2
    angles = sample(
        lambda t: np.sin(t) * np.exp(-0.5 * k * (t - theta0) ** 2 / KT),
        0.0,
        math.pi,
        200_000,
        seed=2,
    )
    centre, constant = boltzmann_harmonic(angles, KT, "angle")
    assert centre == pytest.approx(theta0, abs=0.01)
    assert constant == pytest.approx(k, rel=0.05)


def bonded_molecules(n_copies: int, edge: float, seed: int):
    """Positions [1, 3 n, 3] of bent three-bead molecules in a box, their bonds and angles."""
    rng = np.random.default_rng(seed)
    positions, bonds, triples = [], [], []
    for copy in range(n_copies):
        centre = rng.uniform(0, edge, 3)
        shape = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.1, 0.28, 0.05]])
        positions.append(centre + Rotation.random(random_state=seed + copy).apply(shape))
        first = 3 * copy
        bonds += [[first, first + 1], [first + 1, first + 2]]
        triples.append([first, first + 1, first + 2])
    return np.concatenate(positions)[None], np.array(bonds), np.array(triples)


def test_bonded_forces_are_minus_the_gradient_and_energies_are_invariant():
    edge = 1.6
    positions, bonds, triples = bonded_molecules(4, edge, seed=5)
    stretch = HarmonicBonds(torch.as_tensor(bonds), torch.full((8,), 0.25), torch.full((8,), 900.0))
    bend = HarmonicAngles(torch.as_tensor(triples), torch.full((4,), 1.9), torch.full((4,), 30.0))
    box = torch.eye(3, dtype=torch.float64)[None] * edge

    def energy(x: torch.Tensor) -> torch.Tensor:
        return (stretch.double()(x, box) + bend.double()(x, box)).sum()

    x = torch.as_tensor(positions).requires_grad_(True)
    (gradient,) = torch.autograd.grad(energy(x), x)
    assert float(gradient.abs().max()) > 1.0  # away from the minimum: forces are not trivial
    step = 1e-6
    for bead, axis in [(0, 0), (4, 1), (11, 2)]:
        shifted = x.detach().clone()
        shifted[0, bead, axis] += step
        up = energy(shifted)
        shifted[0, bead, axis] -= 2 * step
        numeric = (up - energy(shifted)) / (2 * step)
        assert float(gradient[0, bead, axis]) == pytest.approx(float(numeric), rel=1e-5)
    # Invariance: rotate and translate everything, then move one molecule by a box vector.
    rotation = torch.as_tensor(Rotation.random(random_state=7).as_matrix())
    moved = x.detach() @ rotation.T + torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    moved[0, 3:6] += torch.tensor([edge, 0.0, -edge], dtype=torch.float64)
    assert float(energy(moved)) == pytest.approx(float(energy(x.detach())), rel=1e-10)


def test_repulsion_skips_bonded_pairs_but_not_other_pairs_at_the_same_distance():
    prior = {
        "n_beads": 3,
        "exclusions": [[0, 1]],
        "repulsion": {"sigma": [[0.3]], "epsilon": 2.5, "switch_factor": 1.5},
        "bonds": None,
        "angles": None,
    }
    module = build_priors(prior).double()
    # Beads 0-1 (excluded) and 1-2 (not) are both 0.25 nm apart; 0-2 are 0.5 nm apart.
    x = torch.tensor([[[0.5, 0.5, 0.5], [0.75, 0.5, 0.5], [1.0, 0.5, 0.5]]], dtype=torch.float64)
    box = torch.eye(3, dtype=torch.float64)[None] * 2.0
    first = torch.tensor([0, 1, 1, 2])
    second = torch.tensor([1, 0, 2, 1])
    vectors = x[0, second] - x[0, first]
    species = torch.zeros(3, dtype=torch.long)
    energies = module(x, box, species, first, second, vectors)
    pair = 2.5 * (0.3 / 0.25) ** 12  # below sigma the switch is 1
    np.testing.assert_allclose(energies.numpy(), [0.0, 0.5 * pair, 0.5 * pair], rtol=1e-6)


def test_rdf_onsets_match_the_rdf_observable():
    edge = 2.0
    positions = np.stack([random_liquid(60, edge, seed, 0.22) for seed in range(5)])
    boxes = np.tile(np.eye(3) * edge, (5, 1, 1))
    types = np.zeros(60, dtype=np.int64)
    topology = CGTopology(np.zeros((0, 2), dtype=np.int64), types, ["W"])
    sigma = rdf_onsets(positions, boxes, topology, r_max=0.9, threshold=0.01, n_bins=90)
    reference = rdf_onset(RDF(0.9, 90).run(Trajectory(positions, boxes)), 0.01)
    assert sigma[0, 0] == pytest.approx(reference, abs=1e-9)
    assert sigma[0, 0] >= 0.22  # the liquid's minimum distance


def test_cg_bonds_angles_and_exclusions_follow_the_covalent_bonds():
    universe = mda.Universe(str(TEMPLATES / "choline.pdb"))
    split = MappingSpec.from_config(
        {
            "name": "three",
            "beads": [
                # N(CH3)3 head, the C1-C5 ethylene, the hydroxyl: a chain N-C-O.
                {"name": "N", "select": "name N C2 C3 C4 H2* H3* H4*"},
                {"name": "C", "select": "name C1 C5 H1* H5*"},
                {"name": "O", "select": "name OH1 HO1"},
            ],
        }
    )
    compiled = compile_mapping(split, universe, universe.atoms.masses)
    np.testing.assert_array_equal(compiled.bonds, [[0, 1], [1, 2]])
    topology = CGTopology(compiled.bonds, compiled.types, compiled.type_names)
    np.testing.assert_array_equal(topology.angles, [[0, 1, 2]])
    np.testing.assert_array_equal(topology.exclusions, [[0, 1], [0, 2], [1, 2]])
    assert topology.term_names(topology.angles) == ["N-C-O"]
    assert topology.term_names(np.array([[2, 1]])) == ["C-O"]


def test_fitted_priors_hold_molecules_at_their_reference_shape():
    edge = 2.4
    frames = [bonded_molecules(6, edge, seed=seed)[0][0] for seed in range(40)]
    rng = np.random.default_rng(0)
    positions = np.stack(frames) + rng.normal(0, 0.01, (40, 18, 3))
    _, bonds, _ = bonded_molecules(6, edge, seed=0)
    types = np.tile([0, 1, 2], 6)
    topology = CGTopology(bonds, types, ["A", "B", "C"])
    boxes = np.tile(np.eye(3) * edge, (40, 1, 1))
    prior = fit_priors(
        positions, boxes, topology, KT, repulsion=None, bonds=True, angles=True, r_max=1.0
    )
    assert prior["bonds"]["names"] == ["A-B", "B-C"]
    lengths = dict(zip(prior["bonds"]["names"], prior["bonds"]["centre"], strict=True))
    assert lengths["A-B"] == pytest.approx(0.3, abs=0.005)
    assert lengths["B-C"] == pytest.approx(math.hypot(0.1, 0.28, 0.05), abs=0.005)
    bend = math.degrees(prior["angles"]["centre"][0])
    expected = math.degrees(math.acos(-0.1 * 0.3 / (0.3 * math.hypot(0.1, 0.28, 0.05))))
    assert bend == pytest.approx(expected, abs=2.0)
    # Stiffness from the 0.01 nm jitter: k ~ kT / var of a bond length (var ~ 2 * 0.01^2).
    assert prior["bonds"]["k"][0] == pytest.approx(KT / (2 * 0.01**2), rel=0.35)
    module = build_priors(prior).double()
    at_rest = module.bonds(torch.as_tensor(positions[:1]), torch.as_tensor(boxes[:1]))
    stretched = positions[:1].copy()
    stretched[0, 0] += 0.05 * (stretched[0, 0] - stretched[0, 1]) / 0.3
    pulled = module.bonds(torch.as_tensor(stretched), torch.as_tensor(boxes[:1]))
    assert float(pulled.sum() - at_rest.sum()) > 5 * KT  # 0.05 nm costs many kT


def test_exported_potential_with_bonded_priors_matches_eager(tmp_path):
    from conftest import NETWORK

    from cgkd.models.checkpoint import build_potential
    from cgkd.simulation.export import export_torchscript

    edge = 2.4
    positions, bonds, triples = bonded_molecules(6, edge, seed=3)
    prior = {
        "n_beads": 18,
        "exclusions": CGTopology(bonds, np.zeros(18, dtype=np.int64), ["A"]).exclusions.tolist(),
        "repulsion": {"sigma": [[0.3, 0.3], [0.3, 0.3]], "epsilon": 2.5, "switch_factor": 1.5},
        "bonds": {"beads": bonds.tolist(), "kind": [0] * 12, "centre": [0.25], "k": [900.0]},
        "angles": {"beads": triples.tolist(), "kind": [0] * 6, "centre": [1.9], "k": [30.0]},
    }
    potential = build_potential([NETWORK], prior)
    species = torch.as_tensor(np.tile([0, 1, 0], 6))
    scripted = torch.jit.load(str(export_torchscript(potential, species, tmp_path / "m.ts")))
    x = torch.as_tensor(positions[0])
    box = torch.eye(3, dtype=torch.float64) * edge
    eager = potential(x[None].float(), box[None].float(), species)[0].double()
    np.testing.assert_allclose(
        scripted.bead_energies(x, box).detach().numpy(), eager.detach().numpy(), rtol=1e-5
    )
    # The bonded terms are in it: stretching a bond raises the exported energy by ~k/2 dx^2.
    stretched = x.clone()
    stretched[0] += 0.05 * (x[0] - x[1]) / torch.linalg.norm(x[0] - x[1])
    rise = float((scripted(stretched, box) - scripted(x, box)).detach())
    assert rise > 0.5 * 900.0 * 0.05**2 * 0.5
