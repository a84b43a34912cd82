"""The classical CG baseline: pair tables are natural cubic splines (as OpenMM interpolates
them), the native OpenMM System gives the torch model's energies and forces, and force
matching recovers a known pair potential from its forces, exact or noisy."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch
from conftest import random_liquid
from scipy.interpolate import CubicSpline

from cgkd.models.checkpoint import build_potential
from cgkd.models.force_matching import TableSettings, fit_pair_table
from cgkd.models.pair_table import PairTable, spline_basis
from cgkd.models.potential import CGPotential
from cgkd.simulation.native import native_system

R_MIN, CUTOFF = 0.12, 0.6
#: Three species; beads 0-2-4 and 1-3-5 are bonded chains with angles (pairs excluded).
PRIOR = {
    "n_beads": 40,
    "exclusions": [[0, 2], [0, 4], [2, 4], [1, 3], [1, 5], [3, 5]],
    "repulsion": {
        "sigma": [[0.25, 0.26, 0.27], [0.26, 0.28, 0.29], [0.27, 0.29, 0.3]],
        "epsilon": 2.5,
        "switch_factor": 1.5,
    },
    "bonds": {
        "beads": [[0, 2], [2, 4], [1, 3], [3, 5]],
        "kind": [0, 0, 1, 1],
        "names": ["A-A", "B-B"],
        "centre": [0.35, 0.4],
        "k": [800.0, 600.0],
    },
    "angles": {
        "beads": [[0, 2, 4], [1, 3, 5]],
        "kind": [0, 1],
        "names": ["A-A-A", "B-B-B"],
        "centre": [2.5, 2.8],
        "k": [40.0, 30.0],
    },
}


def random_table(n_species: int, n_knots: int = 30, seed: int = 0) -> PairTable:
    values = np.random.default_rng(seed).normal(
        0.0, 2.0, (n_species * (n_species + 1) // 2, n_knots)
    )
    values[:, -1] = 0.0
    return PairTable(n_species, R_MIN, CUTOFF, torch.as_tensor(values))


def test_pair_table_is_the_natural_cubic_spline_and_zero_outside():
    table = random_table(2)
    knots = np.linspace(R_MIN, CUTOFF, table.n_knots)
    r = torch.linspace(0.05, 0.7, 400, dtype=torch.float64).requires_grad_(True)
    for a, b, row in ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2)):
        species = torch.full((400,), a), torch.full((400,), b)
        energy = table(species[0], species[1], r)
        (slope,) = torch.autograd.grad(energy.sum(), r)
        spline = CubicSpline(knots, table.values[row].numpy(), bc_type="natural")
        x = r.detach().numpy()
        inside = (x >= R_MIN) & (x <= CUTOFF)
        np.testing.assert_allclose(energy.detach().numpy()[inside], spline(x[inside]), atol=1e-12)
        np.testing.assert_allclose(slope.numpy()[inside], spline(x[inside], 1), atol=1e-9)
        assert np.all(energy.detach().numpy()[~inside] == 0.0)
    values, slopes = spline_basis(r.detach().numpy(), R_MIN, CUTOFF, table.n_knots)
    mixed = table(torch.zeros(400, dtype=torch.long), torch.ones(400, dtype=torch.long), r)
    (mixed_slope,) = torch.autograd.grad(mixed.sum(), r)
    np.testing.assert_allclose(values @ table.values[1].numpy(), mixed.detach(), atol=1e-12)
    np.testing.assert_allclose(slopes @ table.values[1].numpy(), mixed_slope, atol=1e-9)
    with pytest.raises(ValueError, match="last knot"):
        PairTable(1, R_MIN, CUTOFF, torch.ones(1, 5))


@pytest.mark.parametrize("cell", ["cubic", "triclinic"])
def test_native_openmm_system_gives_the_torch_model_energy_and_forces(cell):
    edge = 1.5
    positions = random_liquid(40, edge, seed=3)
    box = np.eye(3) * edge
    if cell == "triclinic":
        box = np.array([[1.5, 0.0, 0.0], [0.4, 1.45, 0.0], [-0.3, 0.35, 1.4]])
        positions = random_liquid(40, 1.0, seed=3, min_distance=0.17) @ box
    positions[[2, 4]] = positions[0] + [[0.35, 0.0, 0.0], [0.6, 0.2, 0.0]]  # bonded chains
    positions[[3, 5]] = positions[1] + [[0.0, 0.4, 0.0], [0.1, 0.75, 0.0]]
    species = torch.as_tensor(np.arange(40) % 3)
    potential = build_potential([], PRIOR, pair_table=random_table(3).spec()).double()
    x = torch.as_tensor(positions).unsqueeze(0).requires_grad_(True)
    energy = potential(x, torch.as_tensor(box).unsqueeze(0), species).sum()
    (gradient,) = torch.autograd.grad(energy, x)
    system = native_system(potential, species, np.full(40, 18.0), box)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    openmm_energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    openmm_forces = np.asarray(state.getForces(asNumpy=True)._value)
    scale = float(gradient.abs().max())
    assert scale > 10.0  # pairs, repulsion, bonds and angles all act
    assert abs(openmm_energy - float(energy)) < 1e-9 * abs(float(energy)) + 1e-9
    np.testing.assert_allclose(openmm_forces, -gradient[0].numpy(), rtol=0, atol=1e-9 * scale)
    with pytest.raises(ValueError, match="only a classical model"):
        native_system(CGPotential(build_potential([dict(n_species=3)]).networks), species, [], box)


def known_potential(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Lennard-Jones-like pair energy (kJ/mol), shifted to 0 at the cutoff, and dU/dr."""
    sigma, epsilon = 0.3, 1.5

    def energy(x: np.ndarray) -> np.ndarray:
        return 4 * epsilon * ((sigma / x) ** 12 - (sigma / x) ** 6)

    slope = 4 * epsilon * (-12 * sigma**12 / r**13 + 6 * sigma**6 / r**7)
    return energy(r) - energy(np.asarray(CUTOFF)), slope


def synthetic_forces(n_frames: int, noise: float, seed: int):
    """Random one-species liquid frames (60 beads, 1.6 nm box) and the known potential's forces
    on them, plus Gaussian noise of ``noise`` kJ/mol/nm per component."""
    rng = np.random.default_rng(seed)
    edge, n_beads = 1.6, 60
    positions = np.stack([random_liquid(n_beads, edge, seed + k, 0.27) for k in range(n_frames)])
    forces = np.zeros_like(positions)
    for k, x in enumerate(positions):
        delta = x[None, :, :] - x[:, None, :]  # x_j - x_i
        delta -= edge * np.round(delta / edge)
        r = np.linalg.norm(delta, axis=-1)
        np.fill_diagonal(r, np.inf)
        within = r < CUTOFF
        slope = np.where(within, known_potential(np.where(within, r, 1.0))[1], 0.0)
        forces[k] = np.sum(slope[:, :, None] * delta / r[:, :, None], axis=1)  # U' u on i
    forces += rng.normal(0.0, noise, forces.shape)
    boxes = np.repeat(np.eye(3)[None] * edge, n_frames, axis=0)
    return positions, boxes, forces


@pytest.mark.parametrize(
    ("noise", "n_frames", "tolerance"), [(0.0, 20, 0.03), (30.0, 80, 0.1)], ids=["exact", "noisy"]
)
def test_force_matching_recovers_a_known_pair_potential(noise, n_frames, tolerance):
    """With noisy forces (as mapped forces are) the error of U is statistical: it grows from
    the cutoff inwards, as the integral of the force error, and shrinks with more frames."""
    positions, boxes, forces = synthetic_forces(n_frames, noise, seed=1)
    settings = TableSettings(cutoff=CUTOFF, spacing=0.01, smoothing=1e-3)
    table, facts = fit_pair_table(
        positions,
        boxes,
        forces,
        np.zeros(60, dtype=int),
        1,
        np.zeros((0, 2)),
        None,
        settings,
        progress=False,
    )
    assert facts["r_min"] == pytest.approx(0.5 * 0.27, abs=0.01)
    # Everything but the noise is explained, up to the splines' 0.01 nm resolution of the wall.
    clean = np.sqrt(np.mean(synthetic_forces(n_frames, 0.0, seed=1)[2] ** 2))
    assert abs(facts["train_force_rms_residual"] - noise) < 0.02 * clean + 0.05 * noise
    r = np.linspace(0.29, 0.58, 60)
    fitted = table(
        torch.zeros(60, dtype=torch.long), torch.zeros(60, dtype=torch.long), torch.as_tensor(r)
    ).numpy()
    expected, _ = known_potential(r)
    depth = abs(expected.min())
    assert np.max(np.abs(fitted - expected)) < tolerance * depth
    # The fit can fail: a table of the wrong potential is far off.
    assert np.max(np.abs(0.5 * expected - expected)) > 5 * tolerance * depth
