"""TorchScript export and OpenMM-Torch MD: same forces everywhere, the Verlet list is exact,
runs resume bit for bit, replicas differ, NVE conserves energy, instability is caught."""

from __future__ import annotations

import shutil

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from conftest import NETWORK, PRIOR

from cgkd.models.checkpoint import build_potential
from cgkd.models.neighbors import neighbor_pairs
from cgkd.simulation.drift import nve_energy_drift
from cgkd.simulation.export import OpenMMPotential, export_torchscript, read_export_metadata
from cgkd.simulation.md import MDSettings, model_forces, run_cg_md, run_replicas
from cgkd.simulation.system import build_system


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


def run_liquid(path, positions, box, settings, out, **kwargs):
    """CG MD of the 40-bead test liquid (water-like masses) with the model at ``path``."""
    masses = np.full(positions.shape[1], 18.0)
    return run_cg_md(
        path, positions[0].numpy(), box[0].numpy(), masses, settings, out, progress=False, **kwargs
    )


@pytest.fixture
def prior_fluid(liquid, tmp_path):
    """An exported repulsive-sphere fluid (the prior of a network whose output is zeroed)."""
    _, _, species = liquid
    model = build_potential([NETWORK], PRIOR)
    with torch.no_grad():
        for network in model.networks:
            network.energy_scale.fill_(0.0)
    return export_torchscript(model, species, tmp_path / "prior.ts")


@pytest.fixture
def ensemble_model(potential, liquid, tmp_path):
    """The two-member test ensemble (random weights, l = 1, 2 terms on), exported in float32."""
    _, _, species = liquid
    with torch.no_grad():
        for network in potential.networks:
            network.energy_scale.fill_(1.0)
    return export_torchscript(potential.float(), species, tmp_path / "ensemble.ts")


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


def test_model_forces_are_minus_the_gradient_on_every_frame(potential, liquid, tmp_path):
    """model_forces: OpenMM's forces of an exported model, frame by frame, are -dE/dx of the
    eager model on each frame (the box and positions set per frame)."""
    positions, box, species = liquid
    model = potential.float()
    path = export_torchscript(model, species, tmp_path / "model.ts")
    frames = torch.cat([positions, positions * 1.02]).float()  # the second in a larger box
    boxes = torch.stack([box[0], box[0] * 1.02]).float()
    x = frames.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x, boxes, species).sum(), x)
    forces = model_forces(path, frames.double().numpy(), boxes.double().numpy(), np.full(40, 18.0))
    scale = float(grad.abs().max())
    assert forces.shape == (2, 40, 3) and scale > 0
    assert not np.allclose(forces[0], forces[1], atol=1e-2 * scale)
    np.testing.assert_allclose(forces, -grad.numpy(), atol=1e-3 * scale)


def test_md_with_prior_only_is_stable_and_writes_frames(prior_fluid, liquid, tmp_path):
    positions, box, _ = liquid
    settings = MDSettings(steps=200, report_interval=50, timestep=0.002, platform="CPU", threads=1)
    result = run_liquid(prior_fluid, positions, box, settings, tmp_path / "run")
    assert result.stable, result.message
    assert result.n_frames == 4 and result.steps_completed == 200
    assert (result.platform, result.threads) == ("CPU", 1)
    traj = mdtraj.load_dcd(result.trajectory, top=result.topology)
    assert traj.n_frames == 4 and traj.n_atoms == 40
    import MDAnalysis as mda

    universe = mda.Universe(result.topology, result.trajectory)
    assert len(universe.trajectory) == 4
    np.testing.assert_allclose(universe.trajectory[-1].positions / 10, traj.xyz[-1], atol=1e-5)
    rows = np.loadtxt(result.state_log, delimiter=",", comments="#")
    assert rows.shape == (4, 7) and list(rows[:, 0]) == [50, 100, 150, 200]
    temperatures = rows[:, 5]
    assert np.all(temperatures > 50) and np.all(temperatures < 900)
    np.testing.assert_allclose(rows[:, 4], rows[:, 2] + rows[:, 3], rtol=1e-6)


def test_collapsing_model_is_reported_unstable_not_crashing(liquid, tmp_path):
    positions, box, _ = liquid

    class Clump(torch.nn.Module):
        """Gaussian attraction between all beads and no repulsion: the beads clump together,
        the failure reported for teachers used directly in MD."""

        def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            edges = torch.diagonal(b)
            d = x.unsqueeze(0) - x.unsqueeze(1)
            d = d - torch.round(d / edges) * edges
            return -25.0 * torch.exp(-torch.sum(d * d, dim=-1) / 0.18).sum()

    path = tmp_path / "collapse.ts"
    torch.jit.script(Clump()).save(str(path))
    settings = MDSettings(steps=2000, report_interval=50, min_distance=0.12)
    result = run_liquid(path, positions, box, settings, tmp_path / "bad")
    assert not result.stable
    assert "beads collapsed" in result.message and "unstable at step" in result.message
    assert (tmp_path / "bad" / "last_good.pdb").is_file()
    assert result.steps_completed < 2000
    # Caught at the first check (step 50): no frame was written, the start is the last good one.
    assert result.n_frames == 0 and result.steps_completed == 0
    last_good = mdtraj.load(str(tmp_path / "bad" / "last_good.pdb"))
    start = mdtraj.load(result.topology)
    np.testing.assert_allclose(last_good.xyz, start.xyz, atol=1e-3)


def test_temperature_runaway_is_caught(liquid, tmp_path):
    positions, box, _ = liquid

    class Push(torch.nn.Module):
        """A constant force of 1000 kJ/mol/nm along x on every bead: in NVE, all accelerate."""

        def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return -1000.0 * x[:, 0].sum()

    path = tmp_path / "push.ts"
    torch.jit.script(Push()).save(str(path))
    # After 5 steps of 5 fs the push alone gives 1.4 nm/ps, about 1400 K; the beads have
    # moved about 0.01 nm against each other, so none collapse first.
    settings = MDSettings(
        integrator="verlet", steps=400, report_interval=5, minimize=False, timestep=0.005
    )
    result = run_liquid(path, positions, box, settings, tmp_path / "hot")
    assert not result.stable
    assert "temperature ran away" in result.message and "(limit 900 K)" in result.message
    assert result.steps_completed < 400


def test_verlet_list_gives_the_pairs_of_a_fresh_search(potential, liquid):
    positions, box, species = liquid
    module = OpenMMPotential(potential.float(), species)
    rng = np.random.default_rng(0)
    x = positions[0].float()
    for _ in range(8):
        x = x + torch.as_tensor(rng.normal(0.0, 0.01, x.shape), dtype=torch.float32)
        first, second, vectors = module.pairs(x, box[0].float())
        fresh = neighbor_pairs(x.unsqueeze(0), box[0].float().unsqueeze(0), potential.cutoff)
        assert torch.equal(first, fresh[0]) and torch.equal(second, fresh[1])
        torch.testing.assert_close(vectors, fresh[2], rtol=0, atol=1e-6)
    # Beads drifted about 0.05 nm in all: the list was reused, and rebuilt when it had to be.
    assert 1 < module.verlet.builds < 8


def test_verlet_skin_shrinks_to_fit_a_small_box(ensemble_model, liquid):
    positions, box, _ = liquid
    model = torch.jit.load(str(ensemble_model))
    small = box[0] * (1.25 / 1.5)  # half width 0.625 nm: room for only 0.025 nm of skin
    model(positions[0] * (1.25 / 1.5), small)
    assert 0 < model.verlet.used_skin < 0.025
    with pytest.raises(torch.jit.Error, match="not below half the smallest box width"):
        model(positions[0] * 0.75, box[0] * 0.75)


def test_run_resumes_from_its_checkpoint_bit_for_bit(ensemble_model, liquid, tmp_path):
    """Reference platform: a run interrupted after its step-100 checkpoint, with one frame and
    state row written after it (as when killed before the next checkpoint), continues to
    exactly the trajectory of the uninterrupted run."""
    positions, box, _ = liquid
    full = MDSettings(steps=200, report_interval=50, platform="Reference", seed=3)
    half = MDSettings(**{**full.__dict__, "steps": 100})
    straight = run_liquid(ensemble_model, positions, box, full, tmp_path / "straight")
    out = tmp_path / "resumed"
    run_liquid(ensemble_model, positions, box, half, out)
    shutil.copy(out / "checkpoint.chk", tmp_path / "step100.chk")
    partial = run_liquid(ensemble_model, positions, box, full, out)  # on to 200 ...
    assert partial.steps_completed == 200
    shutil.copy(tmp_path / "step100.chk", out / "checkpoint.chk")  # ... but "killed" at 150
    resumed = run_liquid(ensemble_model, positions, box, full, out)
    assert straight.stable and resumed.stable
    assert resumed.steps_completed == 200 and resumed.n_frames == 4
    a = mdtraj.load_dcd(straight.trajectory, top=straight.topology)
    b = mdtraj.load_dcd(resumed.trajectory, top=resumed.topology)
    assert b.n_frames == 4
    assert np.array_equal(a.xyz, b.xyz)
    rows_a = np.loadtxt(straight.state_log, delimiter=",", comments="#")
    rows_b = np.loadtxt(resumed.state_log, delimiter=",", comments="#")
    assert np.array_equal(rows_a[:, :6], rows_b[:, :6])  # all but the speed column


def test_replicas_differ_by_seed_and_reproduce(prior_fluid, liquid, tmp_path):
    positions, box, _ = liquid
    settings = MDSettings(steps=100, report_interval=50, platform="Reference", replicas=2)
    starts = np.repeat(positions.numpy(), 2, axis=0)
    boxes = np.repeat(box.numpy(), 2, axis=0)
    masses = np.full(40, 18.0)
    runs = run_replicas(prior_fluid, starts, boxes, masses, settings, tmp_path, progress=False)
    assert [r.seed for r in runs] == [0, 1] and all(r.stable for r in runs)
    first, second = (mdtraj.load_dcd(r.trajectory, top=r.topology).xyz for r in runs)
    assert not np.allclose(first, second, atol=1e-3)
    again = run_liquid(prior_fluid, positions, box, settings, tmp_path / "again", seed=1)
    assert np.array_equal(mdtraj.load_dcd(again.trajectory, top=again.topology).xyz, second)


@pytest.mark.parametrize("seed", [0, 1])
def test_nve_energy_fluctuation_grows_as_the_timestep_squared(liquid, tmp_path, seed):
    """Velocity Verlet is second order: doubling the step quadruples the energy fluctuation.
    A float64 soft-sphere fluid, so that rounding does not hide the integration error."""
    positions, box, _ = liquid

    class SoftSpheres(torch.nn.Module):
        def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            edges = torch.diagonal(b)
            d = x.unsqueeze(0) - x.unsqueeze(1)
            d = d - torch.round(d / edges) * edges
            r2 = torch.sum(d * d, dim=-1) + torch.eye(x.shape[0], dtype=x.dtype)
            energy = 2.5 * (0.09 / r2) ** 6
            return 0.5 * (energy.sum() - 2.5 * 0.09**6 * x.shape[0])

    path = tmp_path / "spheres.ts"
    torch.jit.script(SoftSpheres()).save(str(path))
    runs = [
        nve_energy_drift(
            str(path),
            positions[0].numpy(),
            box[0].numpy(),
            np.full(40, 18.0),
            dt,
            equilibration_steps=200,
            steps=round(2.0 / dt),
            report_interval=5,
            platform="Reference",
            seed=seed,
        )
        for dt in (0.001, 0.002)
    ]
    assert all(r.stable for r in runs)
    ratio = runs[1].fluctuation_per_bead / runs[0].fluctuation_per_bead
    assert 3.0 < ratio < 5.5, ratio
    assert abs(runs[0].drift_kt_per_ns_per_bead) < 0.01


@pytest.mark.parametrize("integrator", ["langevin", "dpd", "nose_hoover", "verlet"])
def test_every_integrator_runs_the_fluid_near_its_temperature(
    prior_fluid, liquid, tmp_path, integrator
):
    positions, box, _ = liquid
    # Langevin and DPD with a friction per bead type (B's named, A's the default).
    frictions = {"B": 5.0} if integrator in ("langevin", "dpd") else None
    settings = MDSettings(
        integrator=integrator, steps=400, report_interval=100, timestep=0.002, frictions=frictions
    )
    names = ["A", "B"] * (positions.shape[1] // 2)
    result = run_liquid(
        prior_fluid, positions, box, settings, tmp_path / integrator, bead_names=names
    )
    assert result.stable, result.message
    rows = np.loadtxt(result.state_log, delimiter=",", comments="#")
    # Started at a minimum with 300 K of velocities: about half the kinetic energy goes into
    # the potential (Verlet keeps the total), the thermostats bring it back up.
    assert 100 < rows[-3:, 5].mean() < 450, rows[:, 5]
    if integrator == "verlet":
        total = rows[:, 4]
        assert np.ptp(total) < 0.01 * np.abs(total).mean() + 0.5


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match=r"simulate\.integrator .leapfrog. is unknown"):
        MDSettings(integrator="leapfrog")
    with pytest.raises(ValueError, match=r"not a multiple of simulate\.report_interval"):
        MDSettings(steps=250, report_interval=100)
    with pytest.raises(ValueError, match="platform 'Metal' is not available"):
        from cgkd.simulation.engine import select_platform

        select_platform("Metal")


def test_a_model_for_another_system_is_a_one_line_error(prior_fluid, liquid, tmp_path):
    positions, box, _ = liquid
    with pytest.raises(ValueError, match=r"prior\.ts cannot evaluate this system: .*40 beads"):
        run_liquid(prior_fluid, positions[:, :30], box, MDSettings(steps=100), tmp_path / "bad")
