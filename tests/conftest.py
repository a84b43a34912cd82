"""Shared fixtures: small random CG systems and small models (float64 for derivative checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgkd.models.checkpoint import build_potential

# isort: off
import openmm  # after cgkd (torch first)

# isort: on


def random_liquid(n_beads: int, edge: float, seed: int, min_distance: float = 0.25) -> np.ndarray:
    """Bead positions [N, 3] (nm) in a cubic box with no pair closer than ``min_distance``."""
    rng = np.random.default_rng(seed)
    points: list[np.ndarray] = []
    while len(points) < n_beads:
        candidate = rng.uniform(0.0, edge, 3)
        if points:
            delta = np.asarray(points) - candidate
            delta -= edge * np.round(delta / edge)
            if np.min(np.linalg.norm(delta, axis=1)) < min_distance:
                continue
        points.append(candidate)
    return np.asarray(points)


NETWORK = dict(
    n_species=2,
    n_features=8,
    n_sensitivities=6,
    n_interactions=2,
    n_atom_layers=1,
    tensor_order=2,
    cutoff=0.6,
    soft_min=0.22,
    soft_max=0.55,
)
PRIOR = {  # for the 40-bead liquid: repulsion only, no bonded terms
    "n_beads": 40,
    "exclusions": [],
    "repulsion": {"sigma": [[0.25, 0.27], [0.27, 0.3]], "epsilon": 2.5, "switch_factor": 1.5},
    "bonds": None,
    "angles": None,
}


@pytest.fixture
def potential():
    """A two-species, two-member HIP-NN-TS ensemble with a prior, random weights, float64."""
    model = build_potential([NETWORK, NETWORK], PRIOR, seeds=[1, 2]).double()
    with torch.no_grad():
        for network in model.networks:
            for block in network.blocks:
                block.interaction.tensor_weights.normal_()  # exercise the l = 1, 2 terms
            network.energy_scale.fill_(10.0)
    return model


@pytest.fixture
def liquid():
    """(positions [1, N, 3], box [1, 3, 3], species [N]) of a 40-bead, 1.5 nm liquid, float64."""
    edge = 1.5
    positions = torch.as_tensor(random_liquid(40, edge, seed=3)).unsqueeze(0)
    box = torch.eye(3, dtype=torch.float64).unsqueeze(0) * edge
    species = torch.as_tensor(np.arange(40) % 2)
    return positions, box, species


def argon_lattice(
    n_side: int, spacing: float, cutoff: float
) -> tuple[openmm.System, np.ndarray, np.ndarray]:
    """A periodic Lennard-Jones argon lattice of ``n_side``^3 atoms ``spacing`` nm apart
    (cutoff ``cutoff`` nm): the System, positions [N, 3] and box [3, 3] (nm)."""
    grid = np.arange(n_side) * spacing
    positions = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    box = np.eye(3) * n_side * spacing
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(cutoff)
    for _ in positions:
        system.addParticle(39.95)
        force.addParticle(0.0, 0.34, 0.997)
    system.addForce(force)
    return system, positions, box
