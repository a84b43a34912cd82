"""Physics of the CG potential: invariances, forces as -grad E, tensor terms, ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cgkd.models.hipnn import _directions
from cgkd.models.priors import PairRepulsion


def energy(potential, positions, box, species):
    return potential(positions, box, species).sum()


def test_energy_invariant_under_translation_rotation_and_image_shifts(potential, liquid):
    positions, box, species = liquid
    reference = energy(potential, positions, box, species)
    shifted = positions + torch.tensor([0.37, -1.2, 2.9], dtype=torch.float64)
    assert torch.allclose(energy(potential, shifted, box, species), reference, rtol=1e-10)
    images = torch.as_tensor(
        np.random.default_rng(0).integers(-2, 3, (1, 40, 3)), dtype=torch.float64
    )
    assert torch.allclose(
        energy(potential, positions + images @ box[0], box, species), reference, rtol=1e-10
    )
    rotation = torch.as_tensor(Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix())
    rotated = energy(potential, positions @ rotation.T, box @ rotation.T, species)
    assert torch.allclose(rotated, reference, rtol=1e-9)
    # The test can fail: moving one bead changes the energy.
    moved = positions.clone()
    moved[0, 0] += 0.05
    assert not torch.allclose(energy(potential, moved, box, species), reference, rtol=1e-6)


def test_forces_are_minus_the_gradient_by_finite_differences(potential, liquid):
    positions, box, species = liquid
    positions = positions.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(energy(potential, positions, box, species), positions)
    step = 1e-6
    for bead, axis in [(0, 0), (7, 1), (22, 2), (39, 0)]:
        plus, minus = positions.detach().clone(), positions.detach().clone()
        plus[0, bead, axis] += step
        minus[0, bead, axis] -= step
        with torch.no_grad():
            numeric = (
                energy(potential, plus, box, species) - energy(potential, minus, box, species)
            ) / (2 * step)
        assert float(gradient[0, bead, axis]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-6)


def test_ensemble_energy_is_mean_of_members(potential, liquid):
    positions, box, species = liquid
    members = potential.member_bead_energies(positions, box, species)
    assert members.shape == (2, 1, 40)
    assert not torch.allclose(members[0], members[1])
    assert torch.allclose(potential(positions, box, species), members.mean(0))


def test_permuting_beads_permutes_bead_energies(potential, liquid):
    positions, box, species = liquid
    order = torch.as_tensor(np.random.default_rng(4).permutation(40))
    reference = potential(positions, box, species)
    permuted = potential(positions[:, order], box, species[order])
    assert torch.allclose(permuted, reference[:, order], rtol=1e-10, atol=1e-10)


def test_tensor_terms_of_order_one_and_two_are_wired_in(potential, liquid):
    positions, box, species = liquid
    reference = energy(potential, positions, box, species).detach()
    for order in (0, 1):  # tensor_weights[0] scales l = 1, tensor_weights[1] scales l = 2
        with torch.no_grad():
            saved = [net.blocks[0].interaction.tensor_weights.clone() for net in potential.networks]
            for net in potential.networks:
                net.blocks[0].interaction.tensor_weights[order] = 0.0
            changed = energy(potential, positions, box, species).detach()
            for net, weights in zip(potential.networks, saved, strict=True):
                net.blocks[0].interaction.tensor_weights.copy_(weights)
        assert abs(float(changed - reference)) > 1e-6 * abs(float(reference)), order


def test_ensemble_mean_forces_are_minus_the_gradient_of_the_mean_energy(potential, liquid):
    from cgkd.training.targets import predict_members

    positions, box, species = liquid
    member_forces, member_energies = predict_members(potential, positions, box, species)
    assert member_forces.shape == (2, 1, 40, 3) and member_energies.shape == (2, 1, 40)
    assert not torch.allclose(member_forces[0], member_forces[1])
    x = positions.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(potential(x, box, species).sum(), x)
    assert torch.allclose(member_forces.mean(0), -gradient, rtol=1e-10, atol=1e-10)


def test_hierarchicality_comes_with_the_same_energies(potential, liquid):
    positions, box, species = liquid
    energies, hierarchicality = potential.energies_and_hierarchicality(positions, box, species)
    assert torch.allclose(energies, potential(positions, box, species), rtol=1e-12)
    n_layers = len(potential.networks[0].blocks)
    assert 0.0 < float(hierarchicality.detach()) < n_layers


def test_quadrupole_directions_have_the_frobenius_norm_of_the_traceless_tensor():
    unit = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=1)
    weights = torch.randn(50, dtype=torch.float64)
    quadrupole = (weights[:, None] * _directions(unit, 2)[:, 4:]).sum(0)
    matrix = sum(
        w * (torch.outer(u, u) - torch.eye(3, dtype=torch.float64) / 3)
        for w, u in zip(weights, unit, strict=True)
    )
    assert float(torch.linalg.norm(quadrupole)) == pytest.approx(
        float(torch.linalg.norm(matrix)), rel=1e-12
    )


def test_repulsion_prior_is_kt_at_sigma_and_vanishes_past_the_switch():
    prior = PairRepulsion(torch.tensor([[0.25]]), epsilon=2.5, switch_factor=1.5)
    species = torch.zeros(4, dtype=torch.long)
    r = torch.tensor([0.2, 0.25, 0.3, 0.376], dtype=torch.float64)
    u = prior(species, species, r)
    assert float(u[1]) == pytest.approx(2.5)
    assert float(u[0]) == pytest.approx(2.5 * (0.25 / 0.2) ** 12)
    assert 0 < float(u[2]) < 2.5 * (0.25 / 0.3) ** 12
    assert float(u[3]) == 0.0
    assert math.isfinite(float(u.sum()))
