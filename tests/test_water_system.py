"""All-atom water generation with OpenMM on tiny boxes (80 molecules, 0.6 nm cutoff), and
the AMOEBA water system on a 30-molecule box."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import MDAnalysis
import numpy as np
import openmm
import pytest
from openmm import app, unit

from cgkd.io.h5md import read_h5md, read_h5md_config, read_h5md_constraints
from cgkd.systems.reference_md import GeneratedSystem, generate
from cgkd.systems.water import AMOEBA_INDUCED_EPSILON, POLARIZATIONS, WaterBoxSpec

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
    return generate(TINY, tmp_path_factory.mktemp("water"), progress=False)


def test_files_and_summary(generated: GeneratedSystem) -> None:
    assert generated.trajectory.name == "aa.h5md"
    assert generated.topology.name == "aa_topology.pdb"
    assert (generated.n_atoms, generated.n_frames) == (240, 3)
    assert generated.density_g_cm3 == pytest.approx(TINY.density, rel=1e-6)
    edge = generated.box_lengths_nm[0]
    assert edge > 2 * TINY.nonbonded_cutoff
    assert generated.npt_density_g_cm3 is None
    assert generated.ns_per_day > 0
    frames = read_h5md(generated.trajectory)
    assert (frames.n_frames, frames.n_particles) == (3, 240)
    assert np.isfinite(frames.positions).all() and np.isfinite(frames.forces).all()
    np.testing.assert_allclose(frames.times, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(frames.boxes[0], np.eye(3) * edge)
    assert frames.type_names == ["HOH"]
    np.testing.assert_allclose(frames.masses[:3], [15.99943, 1.007947, 1.007947])
    constraints = read_h5md_constraints(generated.trajectory)
    assert constraints.shape == (240, 2)  # O-H, O-H and H-H per rigid water
    assert set(np.unique(constraints // 3 - constraints[:, :1] // 3)) == {0}  # within molecules
    stored = read_h5md_config(generated.trajectory)
    assert stored["system"]["n_molecules"] == 80 and stored["system"]["kind"] == "WaterBoxSpec"
    assert stored["ns_per_day"] == pytest.approx(generated.ns_per_day)
    # where it ran, which a bitwise repeat needs: the spec's platform and thread count
    assert (generated.platform, generated.threads) == ("CPU", TINY.threads)
    assert stored["ran_on"] == {"platform": "CPU", "threads": TINY.threads}
    universe = MDAnalysis.Universe(str(generated.topology))
    assert universe.atoms.n_atoms == 240
    # Water's O-H bonds are written as CONECT records (OpenMM's writer skips them).
    assert len(universe.bonds) == 160
    assert {tuple(sorted(bond.atoms.names)) for bond in universe.bonds} == {
        ("H1", "O"),
        ("H2", "O"),
    }
    np.testing.assert_allclose(universe.dimensions[:3], 10 * edge, atol=1e-2)


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
    again = generate(TINY, tmp_path, progress=False)
    np.testing.assert_array_equal(
        read_h5md(again.trajectory).positions, read_h5md(generated.trajectory).positions
    )


def test_box_too_small_for_cutoff(tmp_path: Path) -> None:
    spec = dataclasses.replace(TINY, n_molecules=20)
    with pytest.raises(ValueError, match=r"twice nonbonded_cutoff=0.6 nm; use n_molecules >= \d+"):
        generate(spec, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="water_model 'tip4p' is unsupported"):
        WaterBoxSpec(water_model="tip4p")
    with pytest.raises(ValueError, match="timestep must be positive"):
        WaterBoxSpec(timestep=0.0)
    with pytest.raises(ValueError, match="shorter than one save interval"):
        WaterBoxSpec(production=0.1, save_interval=100)
    with pytest.raises(ValueError, match="platform 'NoSuch' is not available"):
        generate(dataclasses.replace(TINY, platform="NoSuch"), Path("unused"), progress=False)


@pytest.fixture(scope="module")
def four_site(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSystem:
    spec = dataclasses.replace(TINY, water_model="tip4pew", npt_equilibration=1.0)
    return generate(spec, tmp_path_factory.mktemp("tip4pew"), progress=False)


def _tip4pew_context(generated: GeneratedSystem) -> tuple[openmm.Context, np.ndarray]:
    """A Reference-platform TIP4P-Ew context rebuilt from the saved 3-site topology, and the
    indices of its real atoms (the M sites are added back as virtual sites)."""
    pdb = app.PDBFile(str(generated.topology))
    forcefield = app.ForceField("amber14/tip4pew.xml")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addExtraParticles(forcefield)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=TINY.nonbonded_cutoff * unit.nanometer,
    )
    real = np.array([i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)])
    platform = openmm.Platform.getPlatformByName("Reference")
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform), real


def _set_real_positions(context: openmm.Context, real: np.ndarray, x: np.ndarray) -> None:
    full = np.zeros((context.getSystem().getNumParticles(), 3))
    full[real] = x
    context.setPositions(full)
    context.computeVirtualSites()


def test_four_site_water_keeps_real_atoms_with_distributed_forces(
    four_site: GeneratedSystem,
) -> None:
    """The M site is dropped, and the saved O/H forces already carry the force on M: they equal
    a fresh evaluation, the negative energy gradient (M follows its atoms), and sum to ~0."""
    frames = read_h5md(four_site.trajectory)
    assert frames.n_particles == 240 and np.all(frames.masses > 0)
    universe = MDAnalysis.Universe(str(four_site.topology))
    assert sorted(set(universe.atoms.names)) == ["H1", "H2", "O"]
    context, real = _tip4pew_context(four_site)
    assert len(real) == 240 and context.getSystem().getNumParticles() == 320
    context.setPeriodicBoxVectors(*frames.boxes[-1])
    x = frames.positions[-1]
    _set_real_positions(context, real, x)
    fresh = context.getState(forces=True).getForces(asNumpy=True)
    fresh = fresh.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    saved = frames.forces[-1]
    scale = np.sqrt(np.mean(saved**2))
    assert np.abs(fresh[real] - saved).max() < 1e-3 * scale
    # Net force: ~0 over real atoms; adding the entries OpenMM reports for M would break it.
    assert np.linalg.norm(saved.sum(axis=0)) < 1e-3 * scale * np.sqrt(len(saved))
    assert np.linalg.norm(fresh.sum(axis=0)) > 10 * np.linalg.norm(saved.sum(axis=0))
    # -dE/dx by central differences on a few O and H coordinates, with M recomputed.
    h = 1e-5
    for atom, axis in ((0, 0), (1, 1), (5, 2), (33, 0)):
        energies = []
        for sign in (1.0, -1.0):
            moved = x.copy()
            moved[atom, axis] += sign * h
            _set_real_positions(context, real, moved)
            state = context.getState(energy=True)
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(
            saved[atom, axis], abs=0.02 * scale
        )


def test_npt_phase_sets_the_box_to_its_mean_density(four_site: GeneratedSystem) -> None:
    assert (four_site.trajectory.parent / "npt.png").stat().st_size > 1000
    rows = np.loadtxt(four_site.trajectory.parent / "npt.csv", delimiter=",", skiprows=1)
    assert rows.shape == (10, 3)  # 1 ps sampled every 50 steps of 2 fs
    assert four_site.npt_density_g_cm3 == pytest.approx(rows[5:, 2].mean())
    mass_factor = rows[0, 2] * rows[0, 1]  # density * volume is constant
    assert four_site.density_g_cm3 == pytest.approx(mass_factor / rows[5:, 1].mean(), rel=1e-9)
    assert 0.8 < four_site.density_g_cm3 < 1.2
    frames = read_h5md(four_site.trajectory)
    assert not np.allclose(frames.boxes[0], np.eye(3) * 1.3215, atol=1e-4)  # the box moved


#: 30 AMOEBA waters: a 0.966 nm box, just over twice the 0.45 nm cutoff.
AMOEBA = WaterBoxSpec(
    n_molecules=30,
    nonbonded_cutoff=0.45,
    water_model="amoeba2018",
    timestep=0.0005,
    production=0.02,
    save_interval=40,
)


@pytest.mark.parametrize("polarization", POLARIZATIONS)
def test_amoeba_water_is_flexible_and_polarizable(polarization: str) -> None:
    built = dataclasses.replace(AMOEBA, polarization=polarization).build()
    system = built.system
    assert system.getNumParticles() == 90 and system.getNumConstraints() == 0
    assert built.facts["polarization"] == polarization
    multipoles = [f for f in system.getForces() if isinstance(f, openmm.AmoebaMultipoleForce)]
    assert len(multipoles) == 1
    multipole = multipoles[0]
    expected = {
        "mutual": openmm.AmoebaMultipoleForce.Mutual,
        "extrapolated": openmm.AmoebaMultipoleForce.Extrapolated,
        "direct": openmm.AmoebaMultipoleForce.Direct,
    }
    assert multipole.getPolarizationType() == expected[polarization]
    assert multipole.getNonbondedMethod() == openmm.AmoebaMultipoleForce.PME
    assert multipole.getMutualInducedTargetEpsilon() == AMOEBA_INDUCED_EPSILON
    assert multipole.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.45)
    (vdw,) = [f for f in system.getForces() if isinstance(f, openmm.AmoebaVdwForce)]
    assert vdw.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(0.45)
    # AMOEBA's bonded forces without terms in water (slow to compile) are dropped.
    names = sorted(type(force).__name__ for force in system.getForces())
    assert names == [
        "AmoebaMultipoleForce",
        "AmoebaVdwForce",
        "CMMotionRemover",
        "CustomAngleForce",
        "CustomBondForce",
        "HarmonicBondForce",
    ]
    # The rigid models are built as before: constraints, no polarization fact.
    rigid = dataclasses.replace(TINY, n_molecules=30, nonbonded_cutoff=0.45).build()
    assert rigid.system.getNumConstraints() == 90 and "polarization" not in rigid.facts


@pytest.mark.parametrize(("polarization", "tolerance"), [("direct", 1e-5), ("mutual", 2e-4)])
def test_amoeba_forces_are_minus_the_energy_gradient(polarization: str, tolerance: float) -> None:
    """Forces (Reference platform) equal central differences of the energy along random
    directions (h = 1e-4 nm), relative to the RMS force. Direct polarization is exact to ~1e-6;
    mutual dipoles are converged to 1e-5 Debye only, which leaves ~5e-5 of noise."""
    built = dataclasses.replace(AMOEBA, polarization=polarization).build()
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(built.system, openmm.VerletIntegrator(0.0005), platform)
    x = built.positions
    context.setPositions(x)
    forces = context.getState(forces=True).getForces(asNumpy=True)
    forces = forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    scale = np.sqrt(np.mean(forces**2))
    assert scale > 100.0
    h = 1e-4
    for direction in np.random.default_rng(0).normal(size=(4, *x.shape)):
        direction /= np.linalg.norm(direction)
        energies = []
        for sign in (1.0, -1.0):
            context.setPositions(x + sign * h * direction)
            state = context.getState(energy=True)
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        derivative = -(energies[0] - energies[1]) / (2 * h)
        assert derivative == pytest.approx(np.sum(forces * direction), abs=tolerance * scale)


def test_amoeba_polarization_is_validated() -> None:
    with pytest.raises(
        ValueError,
        match=r"^WaterBoxSpec.polarization 'induced' is unknown; use one of "
        r"\['mutual', 'extrapolated', 'direct'\]$",
    ):
        dataclasses.replace(AMOEBA, polarization="induced")
    with pytest.raises(
        ValueError,
        match=r"^WaterBoxSpec.polarization 'direct' only applies to AMOEBA water "
        r"\['amoeba2018'\]; leave it at 'mutual' for tip3p$",
    ):
        WaterBoxSpec(polarization="direct")
