"""All-atom water generation with OpenMM on a tiny box (80 molecules, 0.6 nm cutoff)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import MDAnalysis
import numpy as np
import openmm
import pytest
from openmm import app, unit

from cgkd.io.h5md import read_h5md, read_h5md_config, read_h5md_constraints
from cgkd.systems.water import GeneratedSystem, WaterBoxSpec, generate_water

TINY = WaterBoxSpec(
    n_molecules=80,
    nonbonded_cutoff=0.6,
    equilibration=1.0,
    production=0.3,
    save_interval=50,
    threads=1,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSystem:
    return generate_water(TINY, tmp_path_factory.mktemp("water"), progress=False)


def test_files_and_summary(generated: GeneratedSystem) -> None:
    assert generated.trajectory.name == "aa.h5md"
    assert generated.topology.name == "aa_topology.pdb"
    assert (generated.n_atoms, generated.n_frames) == (240, 3)
    assert generated.density_g_cm3 == pytest.approx(TINY.density, rel=1e-6)
    assert generated.box_edge_nm > 2 * TINY.nonbonded_cutoff
    assert generated.ns_per_day > 0
    frames = read_h5md(generated.trajectory)
    assert (frames.n_frames, frames.n_particles) == (3, 240)
    assert np.isfinite(frames.positions).all() and np.isfinite(frames.forces).all()
    np.testing.assert_allclose(frames.times, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(frames.boxes[0], np.eye(3) * generated.box_edge_nm)
    np.testing.assert_allclose(frames.masses[:3], [15.99943, 1.007947, 1.007947])
    constraints = read_h5md_constraints(generated.trajectory)
    assert constraints.shape == (240, 2)  # O-H, O-H and H-H per rigid water
    assert set(np.unique(constraints // 3 - constraints[:, :1] // 3)) == {0}  # within molecules
    assert read_h5md_config(generated.trajectory)["water_box"]["n_molecules"] == 80
    universe = MDAnalysis.Universe(str(generated.topology))
    assert universe.atoms.n_atoms == 240
    np.testing.assert_allclose(universe.dimensions[:3], 10 * generated.box_edge_nm, atol=1e-2)


def test_saved_forces_match_fresh_evaluation(generated: GeneratedSystem) -> None:
    """Re-evaluate one saved frame with OpenMM's Reference platform: same forces (kJ/mol/nm)."""
    frames = read_h5md(generated.trajectory)
    topology = app.PDBFile(str(generated.topology)).topology
    system = app.ForceField("amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=TINY.nonbonded_cutoff * unit.nanometer
    )
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPeriodicBoxVectors(*frames.boxes[-1])
    context.setPositions(frames.positions[-1])
    fresh = (
        context.getState(forces=True)
        .getForces(asNumpy=True)
        .value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    )
    scale = np.sqrt(np.mean(frames.forces[-1] ** 2))
    assert scale > 100.0  # liquid water: RMS atomic force of several hundred kJ/mol/nm
    assert np.abs(fresh - frames.forces[-1]).max() < 1e-4 * scale


def test_net_force_vanishes(generated: GeneratedSystem) -> None:
    """Newton's third law: the total force is ~0; PME leaves a residual far below random sums."""
    frames = read_h5md(generated.trajectory)
    scale = np.sqrt(np.mean(frames.forces**2)) * np.sqrt(frames.n_particles)
    net = np.linalg.norm(frames.forces.sum(axis=1), axis=1)
    assert np.all(net < 1e-3 * scale)


def test_same_seed_same_trajectory(generated: GeneratedSystem, tmp_path: Path) -> None:
    again = generate_water(TINY, tmp_path, progress=False)
    np.testing.assert_array_equal(
        read_h5md(again.trajectory).positions, read_h5md(generated.trajectory).positions
    )


def test_box_too_small_for_cutoff(tmp_path: Path) -> None:
    spec = dataclasses.replace(TINY, n_molecules=20)
    with pytest.raises(ValueError, match=r"twice nonbonded_cutoff=0.6 nm; use n_molecules >= \d+"):
        generate_water(spec, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="water_model 'tip4p' is unsupported"):
        WaterBoxSpec(water_model="tip4p")
    with pytest.raises(ValueError, match="timestep must be positive"):
        WaterBoxSpec(timestep=0.0)
    with pytest.raises(ValueError, match="shorter than one save interval"):
        WaterBoxSpec(production=0.1, save_interval=100)
    with pytest.raises(ValueError, match="platform 'NoSuch' is not available"):
        generate_water(dataclasses.replace(TINY, platform="NoSuch"), Path("unused"), progress=False)
