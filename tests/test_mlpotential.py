"""openmm-ml's MLPotential('cgkd', modelFile=...): the entry point is registered, the System
it builds gives cgkd's energies and forces (plain, fused and classical exports), it refuses a
topology of another size in one line, and a plain OpenMM script (no cgkd import, openmm
imported before torch) runs an export with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
from conftest import NETWORK, PRIOR
from openmmml import MLPotential
from openmmtorch import TorchForce

from cgkd.models.checkpoint import build_potential
from cgkd.simulation.export import export_flavours
from cgkd.simulation.mlpotential import CGKDPotentialImplFactory
from cgkd.simulation.native import export_native
from cgkd.simulation.system import bead_topology, build_system

EXAMPLE = Path(__file__).parents[1] / "examples" / "mlpotential.py"
MASSES = np.full(40, 18.0)


@pytest.fixture
def exported(liquid, tmp_path):
    """A one-block, two-member ensemble with its prior, exported plain and fused."""
    _, _, species = liquid
    potential = build_potential([{**NETWORK, "n_interactions": 1}] * 2, PRIOR, seeds=[1, 2])
    with torch.no_grad():
        for network in potential.networks:
            network.energy_scale.fill_(10.0)
    files = export_flavours(potential.float(), species, tmp_path / "model.ts")
    assert files["fused"] is not None
    return Path(files["plain"]), Path(files["fused"])


@pytest.fixture
def classical(liquid, tmp_path):
    """A classical model (a flat pair table with the repulsion prior) as a native System."""
    _, box, species = liquid
    table = {"n_species": 2, "r_min": 0.2, "cutoff": 0.6, "values": [[1.0, 0.5, 0.0]] * 3}
    potential = build_potential([], PRIOR, pair_table=table)
    return export_native(potential, species, MASSES, box[0].numpy(), tmp_path / "classical.xml")


def energy_and_forces(system: openmm.System, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """Potential energy (kJ/mol) and forces (kJ/mol/nm) of a System on the CPU platform (its
    forces summed in a fixed order on one thread, so that equal Systems give equal numbers)."""
    context = openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("CPU"),
        {"DeterministicForces": "true", "Threads": "1"},
    )
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    return energy, np.asarray(state.getForces(asNumpy=True)._value)


def test_cgkd_is_an_openmmml_potential():
    entries = entry_points(group="openmmml.potentials", name="cgkd")
    assert entries, "no openmmml.potentials entry point cgkd: run pip install -e . --no-deps"
    assert next(iter(entries)).load() is CGKDPotentialImplFactory
    assert isinstance(MLPotential._implFactories["cgkd"], CGKDPotentialImplFactory)


@pytest.mark.parametrize("kernels", ["plain", "fused", "auto"])
def test_mlpotential_system_gives_cgkd_energy_and_forces(exported, liquid, kernels):
    positions, box, _ = liquid
    plain, fused = exported
    topology = bead_topology(40, box[0].numpy())
    system = MLPotential("cgkd", modelFile=str(plain), kernels=kernels).createSystem(
        topology, masses=MASSES
    )
    forces = [f for f in system.getForces() if not isinstance(f, openmm.CMMotionRemover)]
    runs_fused = kernels == "fused" or (kernels == "auto" and not _has_cuda())
    assert len(forces) == 1 and TorchForce.cast(forces[0]).getOutputsForces() == runs_fused
    assert [system.getParticleMass(i)._value for i in range(40)] == MASSES.tolist()
    reference = build_system(str(fused if runs_fused else plain), MASSES, box[0].numpy())
    energy, force = energy_and_forces(system, positions[0].numpy())
    expected_energy, expected_force = energy_and_forces(reference, positions[0].numpy())
    assert abs(expected_energy) > 1.0 and np.abs(expected_force).max() > 1.0
    assert energy == expected_energy
    np.testing.assert_array_equal(force, expected_force)


def test_classical_model_runs_as_its_native_forces_with_its_masses(classical, liquid):
    positions, box, _ = liquid
    topology = bead_topology(40, box[0].numpy())
    system = MLPotential("cgkd", modelFile=str(classical)).createSystem(
        topology, removeCMMotion=False
    )
    assert [system.getParticleMass(i)._value for i in range(40)] == MASSES.tolist()
    energy, force = energy_and_forces(system, positions[0].numpy())
    expected_energy, expected_force = energy_and_forces(
        build_system(str(classical), MASSES, box[0].numpy()), positions[0].numpy()
    )
    assert abs(expected_energy) > 1.0
    assert energy == expected_energy
    np.testing.assert_array_equal(force, expected_force)


def test_a_topology_of_another_size_is_refused_in_one_line(exported, classical, liquid):
    _, box, _ = liquid
    for path in (exported[0], classical):
        potential = MLPotential("cgkd", modelFile=str(path))
        with pytest.raises(ValueError) as error:
            potential.createSystem(bead_topology(39, box[0].numpy()), masses=18.0)
        message = str(error.value)
        assert "\n" not in message
        assert str(path) in message and "40 beads" in message and "39 particles" in message


def test_beads_without_masses_and_unsupported_uses_are_refused(exported, liquid, tmp_path):
    _, box, _ = liquid
    plain, fused = exported
    topology = bead_topology(40, box[0].numpy())
    with pytest.raises(ValueError, match="40 of the 40 particles have no mass"):
        MLPotential("cgkd", modelFile=str(plain)).createSystem(topology)
    with pytest.raises(ValueError, match="kernels='fast' is unknown"):
        MLPotential("cgkd", modelFile=str(plain), kernels="fast")
    lone = tmp_path / "lone.ts"
    shutil.copy(plain, lone)
    with pytest.raises(ValueError, match=r"has no fused export lone_fused\.ts"):
        MLPotential("cgkd", modelFile=str(lone), kernels="fused").createSystem(topology)
    with pytest.raises(ValueError, match="is a fused export"):
        MLPotential("cgkd", modelFile=str(fused), kernels="plain").createSystem(topology)
    impl = CGKDPotentialImplFactory().createImpl("cgkd", modelFile=plain)
    system = openmm.System()
    for _ in range(40):
        system.addParticle(18.0)
    with pytest.raises(ValueError, match="atoms subsets"):
        impl.addForces(topology, system, range(10), 0)
    topology.setPeriodicBoxVectors(None)
    with pytest.raises(ValueError, match="periodic box"):
        impl.addForces(topology, system, None, 0)


def test_plain_openmm_script_runs_an_export_through_openmmml(exported, liquid, tmp_path):
    """examples/mlpotential.py imports openmm first and nothing from cgkd."""
    positions, box, _ = liquid
    topology = bead_topology(40, box[0].numpy())
    start = tmp_path / "start.pdb"
    with open(start, "w") as handle:
        app.PDBFile.writeFile(topology, positions[0].numpy() * 10.0, handle)  # angstrom
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(exported[0]), str(start), "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Potential Energy" in result.stdout
    assert not re.search(r"^(import|from) cgkd", EXAMPLE.read_text(), re.MULTILINE)


def _has_cuda() -> bool:
    """Whether OpenMM has its CUDA platform here (then ``kernels=auto`` runs the plain file)."""
    platforms = range(openmm.Platform.getNumPlatforms())
    return "CUDA" in {openmm.Platform.getPlatform(i).getName() for i in platforms}
