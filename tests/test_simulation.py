"""TorchScript export and OpenMM-Torch MD: same forces everywhere, instability is caught."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch
from conftest import NETWORK, PRIOR

from cgkd.models.checkpoint import build_potential
from cgkd.simulation.export import export_torchscript, read_export_metadata
from cgkd.simulation.md import MDSettings, build_system, run_cg_md


def openmm_forces(model_path, positions, box, masses):
    system = build_system(model_path, masses, box)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
    )
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(
        openmm.unit.kilojoule_per_mole / openmm.unit.nanometer
    )
    return energy, np.asarray(forces)


def run_liquid(path, positions, box, settings, out):
    """CG MD of the 40-bead test liquid (water-like masses) with the model at ``path``."""
    masses = np.full(positions.shape[1], 18.0)
    return run_cg_md(
        path, positions[0].numpy(), box[0].numpy(), masses, settings, out, progress=False
    )


def test_eager_torchscript_and_openmm_give_the_same_forces(potential, liquid, tmp_path):
    positions, box, species = liquid
    model = potential.float()
    path = export_torchscript(model, species, tmp_path / "model.ts", {"type_names": ["A", "B"]})
    assert read_export_metadata(path)["type_names"] == ["A", "B"]

    x = positions.float().clone().requires_grad_(True)
    eager_energy = model(x, box.float(), species).sum()
    (eager_grad,) = torch.autograd.grad(eager_energy, x)

    scripted = torch.jit.load(str(path))
    x64 = positions[0].clone().requires_grad_(True)
    script_energy = scripted(x64, box[0])
    (script_grad,) = torch.autograd.grad(script_energy, x64)

    energy, forces = openmm_forces(path, positions[0].numpy(), box[0].numpy(), np.full(40, 18.0))
    scale = float(eager_grad.abs().max())
    assert scale > 0
    np.testing.assert_allclose(-script_grad.numpy(), -eager_grad[0].numpy(), atol=1e-4 * scale)
    np.testing.assert_allclose(forces, -eager_grad[0].numpy(), atol=1e-3 * scale)
    assert energy == pytest.approx(float(eager_energy.detach()), rel=1e-5)
    assert float(scripted.bead_energies(x64.detach(), box[0]).sum().detach()) == pytest.approx(
        float(eager_energy.detach()), rel=1e-5
    )


def test_md_with_prior_only_is_stable_and_writes_frames(liquid, tmp_path):
    positions, box, species = liquid
    model = build_potential([NETWORK], PRIOR)
    with torch.no_grad():
        for network in model.networks:
            network.energy_scale.fill_(0.0)  # a pure repulsive-sphere fluid
    path = export_torchscript(model, species, tmp_path / "prior.ts")
    settings = MDSettings(steps=200, report_interval=50, timestep=0.002)
    result = run_liquid(path, positions, box, settings, tmp_path / "run")
    assert result.stable, result.message
    assert result.n_frames == 4 and result.steps_completed == 200
    import mdtraj

    traj = mdtraj.load_dcd(str(result.trajectory), top=str(result.topology))
    assert traj.n_frames == 4 and traj.n_atoms == 40
    temperatures = np.loadtxt(result.state_log, delimiter=",", skiprows=1)[:, 4]
    assert np.all(temperatures > 50) and np.all(temperatures < 900)


def test_collapsing_model_is_reported_unstable_not_crashing(liquid, tmp_path):
    positions, box, _ = liquid

    class Collapse(torch.nn.Module):
        """A strong harmonic pull of every bead to the origin: beads pile up."""

        def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            d = x - torch.round(x / torch.diagonal(b)) * torch.diagonal(b)
            return 5.0e4 * (d * d).sum()

    path = tmp_path / "collapse.ts"
    torch.jit.script(Collapse()).save(str(path))
    settings = MDSettings(steps=2000, report_interval=50, minimize=False, min_distance=0.12)
    result = run_liquid(path, positions, box, settings, tmp_path / "bad")
    assert not result.stable
    assert "step" in result.message
    assert (tmp_path / "bad" / "last_good.pdb").is_file()
    assert result.steps_completed < 2000
