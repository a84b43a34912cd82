"""Physics of the CG potential: invariances, forces as -grad E, tensor terms, ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import NETWORK
from scipy.spatial.transform import Rotation

from cgkd.models.hipnn import HipnnTS, InteractionLayer, _directions
from cgkd.models.neighbors import neighbor_pairs
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
    ones = torch.ones(50, dtype=torch.float64)
    directions = _directions(ones, unit[:, 0], unit[:, 1], unit[:, 2], 2, 1)
    quadrupole = (weights[:, None] * directions[:, 4:]).sum(0)
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


def reference_interaction(layer: InteractionLayer, features, first, second, vectors):
    """The interaction layer written out pair by pair with full 3 x 3 tensors: messages
    q_ij = sum_nu,b s_nu(r_ij) V_nu,a,b z_jb, summed with 1, rhat and rhat rhat^T - I/3."""
    distances = torch.linalg.norm(vectors, dim=1)
    unit = vectors / distances[:, None]
    messages = torch.einsum(
        "pn,nba,pb->pa", layer.sensitivity(distances), layer.pair_weights, features[second]
    )
    traceless = unit[:, :, None] * unit[:, None, :] - torch.eye(3, dtype=unit.dtype) / 3
    n_beads, n_out = features.shape[0], messages.shape[1]
    scalar = torch.zeros(n_beads, n_out, dtype=features.dtype).index_add(0, first, messages)
    vector = torch.zeros(n_beads, 3, n_out, dtype=features.dtype).index_add(
        0, first, unit[:, :, None] * messages[:, None, :]
    )
    matrix = torch.zeros(n_beads, 3, 3, n_out, dtype=features.dtype).index_add(
        0, first, traceless[..., None] * messages[:, None, None, :]
    )
    out = layer.self_interaction(features) + scalar
    if layer.order >= 1:
        out = out + layer.tensor_weights[0] * torch.sqrt((vector**2).sum(1) + 1e-8)
    if layer.order == 2:
        out = out + layer.tensor_weights[1] * torch.sqrt((matrix**2).sum((1, 2)) + 1e-8)
    return out


def reference_energies(network: HipnnTS, species, first, second, vectors):
    """HipnnTS bead energies with every interaction layer replaced by the reference."""
    features = torch.nn.functional.one_hot(species, network.n_species).to(vectors.dtype)
    energy = network.species_energy(features).squeeze(-1)
    for block, readout in zip(network.blocks, network.readouts, strict=True):
        features = torch.nn.functional.softplus(
            reference_interaction(block.interaction, features, first, second, vectors)
        )
        for layer in block.atom_layers:
            features = features + torch.nn.functional.softplus(layer(features))
        energy = energy + readout(features).squeeze(-1)
    return energy * network.energy_scale


@pytest.fixture(scope="module")
def clustered_frames():
    """(species [2 * 60], pairs (first, second, vectors)) of two 60-bead frames in a 3 nm box,
    each with a dense cluster (one bead with over 20 neighbours) and a bead with none."""
    rng = np.random.default_rng(11)
    frames = []
    for _ in range(2):
        spread = rng.uniform(0.0, 3.0, (60, 3))
        spread[:25] = 1.5 + rng.normal(0.0, 0.12, (25, 3))  # cluster around (1.5, 1.5, 1.5)
        spread[25:] = spread[25:] @ np.diag([1.0, 1.0, 0.35])  # the rest in a slab z < 1.05
        spread[59] = [0.2, 0.2, 2.2]  # far from everything: no neighbours
        frames.append(spread)
    positions = torch.as_tensor(np.stack(frames)).requires_grad_(True)
    box = torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 3.0
    first, second, vectors = neighbor_pairs(positions, box, NETWORK["cutoff"])
    counts = torch.bincount(first, minlength=120)
    assert counts[59] == 0 and counts[119] == 0 and int(counts.max()) > 20
    assert int((counts > 0).sum()) > 100
    species = torch.as_tensor(rng.integers(0, 2, 120))
    return species, (first, second, vectors.detach())


def random_network(order: int, environment_first: bool) -> HipnnTS:
    """The test network at tensor ``order`` with random tensor weights, float64, every
    interaction layer forced to one evaluation order."""
    torch.manual_seed(5)
    network = HipnnTS(**{**NETWORK, "tensor_order": order}).double()
    with torch.no_grad():
        for block in network.blocks:
            block.interaction.tensor_weights.normal_()
            block.interaction.environment_first = environment_first
    return network


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to 1e-10 relative to the largest element of ``expected``."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("environment_first", [True, False], ids=["environment", "projection"])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_network_matches_the_pair_by_pair_reference(clustered_frames, order, environment_first):
    species, (first, second, vectors) = clustered_frames
    network = random_network(order, environment_first)
    vectors = vectors.clone().requires_grad_(True)
    energies = network(species, first, second, vectors)
    expected = reference_energies(network, species, first, second, vectors)
    assert_close(energies, expected)
    parameters = list(network.parameters())
    gradients, expected_gradients = (
        torch.autograd.grad(
            e.square().sum(), [vectors, *parameters], allow_unused=True, materialize_grads=True
        )
        for e in (energies, expected)
    )
    for actual, reference in zip(gradients, expected_gradients, strict=True):
        assert_close(actual, reference)
    # The test can fail: the tensor terms matter, and the lone beads feel no neighbours.
    if order > 0:
        with torch.no_grad():
            network.blocks[0].interaction.tensor_weights[order - 1] = 0.0
        changed = network(species, first, second, vectors).detach()
        assert (changed - energies.detach()).abs().max() > 1e-3 * energies.abs().max()
    lone = torch.tensor([59, 119])
    offsets = network.species_energy(torch.eye(2, dtype=torch.float64)).squeeze(-1)
    assert not torch.allclose(energies[lone], offsets[species[lone]] * network.energy_scale)


@pytest.mark.parametrize("environment_first", [True, False], ids=["environment", "projection"])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_interaction_layer_on_features_matches_the_reference(
    clustered_frames, order, environment_first
):
    species, (first, second, vectors) = clustered_frames
    torch.manual_seed(order)
    layer = InteractionLayer(5, 7, 4, 0.22, 0.55, 0.6, order).double()
    layer.environment_first = environment_first
    with torch.no_grad():
        layer.tensor_weights.normal_()
    features = torch.randn(species.shape[0], 5, dtype=torch.float64, requires_grad=True)
    vectors = vectors.clone().requires_grad_(True)
    out = layer(features, first, second, vectors)
    expected = reference_interaction(layer, features, first, second, vectors)
    assert_close(out, expected)
    weights = torch.randn_like(out)
    gradients = torch.autograd.grad((weights * out).sum(), [features, vectors])
    expected_gradients = torch.autograd.grad((weights * expected).sum(), [features, vectors])
    for actual, reference in zip(gradients, expected_gradients, strict=True):
        assert_close(actual, reference)


def test_pairs_not_sorted_by_first_bead_are_refused(clustered_frames):
    species, (first, second, vectors) = clustered_frames
    network = random_network(2, True)
    order = torch.randperm(first.shape[0], generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="sorted by first bead"):
        network(species, first[order], second[order], vectors[order])
    # Any order within a bead's pairs gives the same energies.
    within = torch.argsort(first * 1000 - second)
    assert_close(
        network(species, first[within], second[within], vectors[within]),
        network(species, first, second, vectors),
    )


def test_load_potential_sets_up_a_bond_free_model_for_another_bead_count(tmp_path):
    from conftest import NETWORK, PRIOR

    from cgkd.models.checkpoint import build_potential, load_potential, save_potential

    model = build_potential([NETWORK], PRIOR)
    path = save_potential(tmp_path / "m.pt", model, [NETWORK], PRIOR)
    resized, _ = load_potential(path, n_beads=64)
    x = torch.rand(1, 64, 3) * 2.0
    box = torch.eye(3).unsqueeze(0) * 2.0
    species = torch.arange(64) % 2
    assert resized(x, box, species).shape == (1, 64)
    with pytest.raises(ValueError, match="priors were fitted for 40 beads"):
        load_potential(path)[0](x, box, species)
    bonded = {**PRIOR, "bonds": {"pairs": [[0, 1]], "r0": [0.3], "k": [1000.0]}}
    save_potential(tmp_path / "b.pt", model, [NETWORK], bonded)
    with pytest.raises(ValueError, match="bonded priors for 40 beads"):
        load_potential(tmp_path / "b.pt", n_beads=64)
