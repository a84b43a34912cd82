"""The reline box (ChCl : urea = 1 : 2, CHARMM36) on a small box: 16 ChCl, 0.8 nm cutoff."""

from __future__ import annotations

# isort: off
import cgkd  # noqa: F401  (imports torch before openmm, so OpenMM's plugins load)

# isort: on
import dataclasses
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

import cgkd.systems.reline as reline
from cgkd.systems.base import BuiltSystem
from cgkd.systems.reline import RelineSpec
from cgkd.units import AVOGADRO, NM3_PER_CM3

SMALL = RelineSpec(n_choline_chloride=16, nonbonded_cutoff=0.8, switch_distance=0.7, threads=1)


@pytest.fixture(scope="module")
def built() -> BuiltSystem:
    return SMALL.build()


def test_composition_and_facts(built: BuiltSystem) -> None:
    residues = list(built.topology.residues())
    names = [residue.name for residue in residues]
    assert names == ["CHOL"] * 16 + ["CLA"] * 16 + ["UREA"] * 32
    sizes = {residue.name: len(list(residue.atoms())) for residue in residues}
    assert sizes == {"CHOL": 21, "CLA": 1, "UREA": 8}
    assert built.positions.shape == (16 * 38, 3)
    assert built.system.getNumParticles() == built.topology.getNumAtoms() == 608
    assert built.facts["composition"] == {"CHOL": 16, "CLA": 16, "UREA": 32}
    assert built.facts["n_atoms"] == 608
    assert built.facts["force_field"] == ["charmm36.xml", "charmm36/water.xml"]
    assert built.facts["packmol_version"]


def test_neutral(built: BuiltSystem) -> None:
    (force,) = (f for f in built.system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = [
        force.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
        for i in range(force.getNumParticles())
    ]
    assert sum(charges) == pytest.approx(0.0, abs=1e-9)
    assert sum(charges[:21]) == pytest.approx(1.0) and charges[16 * 21] == pytest.approx(-1.0)


def test_box_has_packing_density(built: BuiltSystem) -> None:
    box = built.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    np.testing.assert_allclose(np.asarray(box), np.eye(3) * SMALL.box_edge)
    mass = sum(
        built.system.getParticleMass(i).value_in_unit(unit.dalton)
        for i in range(built.system.getNumParticles())
    )
    density = mass / AVOGADRO / (SMALL.box_edge**3 / NM3_PER_CM3)
    assert density == pytest.approx(SMALL.packing_density, rel=1e-3)
    assert SMALL.box_edge > 2 * SMALL.nonbonded_cutoff


def test_molecules_keep_packing_tolerance_across_faces(built: BuiltSystem) -> None:
    molecule = np.array([atom.residue.index for atom in built.topology.atoms()])
    delta = built.positions[:, None] - built.positions[None]
    delta -= SMALL.box_edge * np.round(delta / SMALL.box_edge)
    distance = np.linalg.norm(delta, axis=-1)
    distance[molecule[:, None] == molecule[None]] = np.inf
    assert distance.min() > 0.9 * SMALL.packing_tolerance


def test_seed_reproduces_the_box(built: BuiltSystem) -> None:
    np.testing.assert_array_equal(SMALL.build().positions, built.positions)
    other = dataclasses.replace(SMALL, seed=1).build().positions
    assert np.abs(other - built.positions).max() > 0.1


def test_hydrogen_bonds_are_constrained_and_lj_switched(built: BuiltSystem) -> None:
    hydrogen = app.element.hydrogen
    xh = {
        tuple(sorted((bond.atom1.index, bond.atom2.index)))
        for bond in built.topology.bonds()
        if hydrogen in (bond.atom1.element, bond.atom2.element)
    }
    assert len(xh) == 16 * 14 + 32 * 4
    system = built.system
    constrained = {
        tuple(sorted(system.getConstraintParameters(k)[:2]))
        for k in range(system.getNumConstraints())
    }
    assert constrained == xh
    cutoff_forces = [
        f
        for f in system.getForces()
        if isinstance(f, (openmm.NonbondedForce, openmm.CustomNonbondedForce))
    ]
    assert cutoff_forces
    for force in cutoff_forces:
        assert force.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.8)
        assert force.getUseSwitchingFunction()
        assert force.getSwitchingDistance().value_in_unit(unit.nanometer) == pytest.approx(0.7)


def test_lennard_jones_moved_into_nonbonded_force_is_exact(built: BuiltSystem) -> None:
    """Same energy and forces as charmm36.xml's own CustomNonbondedForce table (Reference)."""
    assert not any(isinstance(f, openmm.CustomNonbondedForce) for f in built.system.getForces())
    table = app.ForceField(*reline.FORCE_FIELD_FILES).createSystem(
        built.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=0.8 * unit.nanometer,
        switchDistance=0.7 * unit.nanometer,
        constraints=app.HBonds,
    )
    results = []
    for system in (built.system, table):
        platform = openmm.Platform.getPlatformByName("Reference")
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        context.setPositions(built.positions)
        state = context.getState(energy=True, forces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        results.append((energy, forces))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-9)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-7, atol=1e-6)


def test_minimisation_lowers_the_energy(built: BuiltSystem) -> None:
    integrator = openmm.VerletIntegrator(0.001)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(built.system, integrator, platform, {"Threads": "2"})
    context.setPositions(built.positions)
    before = context.getState(energy=True).getPotentialEnergy()
    openmm.LocalEnergyMinimizer.minimize(context, 100.0, 200)
    state = context.getState(energy=True, forces=True)
    after = state.getPotentialEnergy()
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert np.isfinite(forces).all()
    assert after < before
    assert after.value_in_unit(unit.kilojoule_per_mole) < 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_choline_chloride": 16}, "use n_choline_chloride >= 41 or a smaller cutoff"),
        ({"n_choline_chloride": -1}, "RelineSpec.n_choline_chloride must be positive, got -1"),
        ({"packing_density": 0.0}, "RelineSpec.packing_density must be positive, got 0.0"),
        ({"switch_distance": 1.2}, "switch_distance=1.2 nm must be below nonbonded_cutoff=1.2"),
        ({"seed": -1}, "RelineSpec.seed must be >= 0"),
        ({"production": 0.0}, "RelineSpec.production must be positive"),
    ],
)
def test_bad_spec_raises_one_line(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        RelineSpec(**changes)
    assert "\n" not in str(error.value)


def test_packmol_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "packmol"
    fake.write_text("#!/bin/sh\necho ' Reading input'\necho ' ERROR: cannot pack'\nexit 172\n")
    fake.chmod(0o755)
    monkeypatch.setattr(reline, "get_binary_path", lambda: fake)
    with pytest.raises(
        RuntimeError, match=r"packmol failed \(exit code 172\): ERROR: cannot pack$"
    ):
        SMALL.build()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    from cgkd.systems.reference_md import generate

    spec = dataclasses.replace(
        SMALL, npt_equilibration=0.4, equilibration=0.1, production=0.3, save_interval=50
    )
    return spec, generate(spec, tmp_path_factory.mktemp("reline"), progress=False)


def test_generated_forces_match_openmm_after_reading_back(generated) -> None:
    """Saved frames, read back through cgkd and through MDAnalysis, re-evaluated by OpenMM's
    Reference platform on the same system: the same forces (kJ/mol/nm)."""
    from cgkd.io.h5md import read_h5md, read_h5md_constraints
    from cgkd.io.trajectory import load_trajectory

    spec, made = generated
    frames = read_h5md(made.trajectory)
    assert (frames.n_frames, frames.n_particles) == (3, 608)
    assert frames.type_names == ["CHOL", "CLA", "UREA"]
    assert read_h5md_constraints(made.trajectory).shape == (352, 2)
    assert made.npt_density_g_cm3 is not None and 0.9 < made.npt_density_g_cm3 < 1.4
    _, via_mda = load_trajectory(made.topology, made.trajectory)
    np.testing.assert_allclose(via_mda.forces, frames.forces, rtol=1e-5, atol=1e-2)
    system = spec.build().system  # same seed: the same packing and parameters
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    for t in range(frames.n_frames):
        context.setPeriodicBoxVectors(*frames.boxes[t])
        context.setPositions(frames.positions[t])
        fresh = context.getState(forces=True).getForces(asNumpy=True)
        fresh = fresh.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        scale = np.sqrt(np.mean(frames.forces[t] ** 2))
        assert scale > 100.0
        # The CPU platform's single-precision PME against Reference's double precision.
        assert np.sqrt(np.mean((fresh - frames.forces[t]) ** 2)) < 2e-3 * scale


def mapping_spec(name: str):
    """The MappingSpec of conf/mapping/<name>.yaml, composed by Hydra."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cgkd.mapping.definition import MappingSpec

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=[f"mapping={name}"])
    return MappingSpec.from_config(OmegaConf.to_container(cfg.mapping, resolve=True))


@pytest.mark.parametrize(
    ("name", "types", "counts"),
    [
        ("molecule_com", ["CHOL", "CLA", "UREA"], [16, 16, 32]),
        ("reline", ["CH", "CL", "UR"], [16, 16, 32]),
        ("reline_multibead", ["CHN", "CHO", "CL", "UR"], [16, 16, 16, 32]),
    ],
)
def test_generated_reline_maps_with_each_config(generated, tmp_path: Path, name, types, counts):
    from cgkd.io.h5md import read_h5md
    from cgkd.mapping.apply import map_trajectory

    _, made = generated
    mapped = map_trajectory(
        made.topology, made.trajectory, tmp_path / "cg.h5md", mapping_spec(name)
    )
    assert (mapped.n_beads, mapped.type_names) == (sum(counts), types)
    cg, aa = read_h5md(mapped.path), read_h5md(made.trajectory)
    assert np.bincount(cg.types).tolist() == counts
    chloride = next(i for i, t in enumerate(types) if t.startswith("CL"))
    np.testing.assert_allclose(cg.masses[cg.types == chloride], 35.45, atol=0.01)
    np.testing.assert_allclose(cg.masses.sum(), aa.masses.sum())
    # Every atom is in one bead and the basic map sums forces: the total force is unchanged.
    np.testing.assert_allclose(cg.forces.sum(axis=1), aa.forces.sum(axis=1), atol=1e-6)
    first_choline = aa.forces[:, :21].sum(axis=1)
    choline_beads = cg.forces[:, : 2 if name == "reline_multibead" else 1].sum(axis=1)
    np.testing.assert_allclose(choline_beads, first_choline, atol=1e-9)
