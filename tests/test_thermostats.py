"""Thermostats with a friction per bead type: Langevin damps each type at its own rate
(velocity autocorrelation exp(-gamma t) for free particles) and holds the temperature; DPD
holds the temperature and conserves total momentum, which Langevin does not; Brownian beads
diffuse at kT / (m gamma), also where Langevin middle integration cannot go."""

from __future__ import annotations

import numpy as np
import pytest
import torch

# isort: off
from cgkd.simulation.engine import make_integrator  # before openmm
import openmm
import openmm.unit as unit

# isort: on

from cgkd.simulation.thermostats import named_frictions

MASS, TEMPERATURE, EDGE, STEP = 18.0, 300.0, 3.0, 0.002  # amu, K, nm, ps
KB = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def context(n: int, integrator: openmm.Integrator, *, soft_pairs: bool = False):
    """``n`` particles of ``MASS`` in a periodic cube, free or with a soft pair repulsion,
    on a grid, velocities drawn at ``TEMPERATURE``."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * EDGE))
    for _ in range(n):
        system.addParticle(MASS)
    if soft_pairs:
        force = openmm.CustomNonbondedForce("10*(1-r/0.5)^2")
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(0.5)
        for _ in range(n):
            force.addParticle([])
        system.addForce(force)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    platform = openmm.Platform.getPlatformByName("Reference")
    simulation = openmm.Context(system, integrator, platform)
    simulation.setPositions((grid + 0.5) * EDGE / side)
    simulation.setVelocitiesToTemperature(TEMPERATURE, 7)
    return simulation


def velocities(simulation) -> np.ndarray:
    return simulation.getState(getVelocities=True).getVelocities(asNumpy=True)._value


def test_each_type_is_damped_at_its_own_friction():
    """Free particles of two types with frictions 1 and 20 1/ps: the velocity autocorrelation
    after 0.05 ps is exp(-gamma t) for each type, and each type holds 300 K."""
    types = np.arange(400) % 2
    frictions = np.array([1.0, 20.0])
    integrator = make_integrator(
        "langevin", STEP, temperature=TEMPERATURE, types=types, type_frictions=frictions, seed=3
    )
    simulation = context(400, integrator)
    integrator.step(500)  # equilibrate
    lag, correlations, squares = 25, [[], []], [[], []]
    for _ in range(12):
        start = velocities(simulation)
        integrator.step(lag)
        end = velocities(simulation)
        for kind in (0, 1):
            mask = types == kind
            correlations[kind].append(np.sum(start[mask] * end[mask]))
            squares[kind].append(np.sum(start[mask] ** 2))
    for kind, friction in enumerate(frictions):
        measured = np.sum(correlations[kind]) / np.sum(squares[kind])
        assert measured == pytest.approx(np.exp(-friction * lag * STEP), abs=0.04), kind
        kinetic = 0.5 * MASS * np.mean(squares[kind]) / (types == kind).sum()
        assert kinetic / (1.5 * KB) == pytest.approx(TEMPERATURE, rel=0.08), kind


def test_dpd_conserves_momentum_and_holds_the_temperature():
    """DPD (pair frictions 5 and 20 1/ps): the total momentum stays where it started while
    Langevin's wanders; the temperature stays near 300 K."""
    types = np.arange(216) % 2
    momenta = {}
    for kind in ("dpd", "langevin"):
        integrator = make_integrator(
            kind,
            STEP,
            temperature=TEMPERATURE,
            types=types,
            type_frictions=np.array([5.0, 20.0]),
            dpd_cutoff=0.5,
            seed=5,
        )
        simulation = context(216, integrator, soft_pairs=True)
        before = MASS * velocities(simulation).sum(axis=0)
        integrator.step(1000)  # about 1 ps to share the energy with the pair repulsion
        temperatures = []
        for _ in range(5):
            integrator.step(200)
            after = velocities(simulation)
            temperatures.append(MASS * np.mean(np.sum(after**2, axis=1)) / (3 * KB))
        momenta[kind] = np.linalg.norm(MASS * after.sum(axis=0) - before)
        assert np.mean(temperatures) == pytest.approx(TEMPERATURE, rel=0.08), kind
    typical = MASS * np.sqrt(3 * KB * TEMPERATURE / MASS) * np.sqrt(216)  # a random walk's
    assert momenta["langevin"] > 0.1 * typical
    assert momenta["dpd"] < 1e-6 * typical


def positions(simulation) -> np.ndarray:
    return simulation.getState(getPositions=True).getPositions(asNumpy=True)._value


def test_brownian_beads_diffuse_at_kt_over_m_gamma_below_the_langevin_floor():
    """Free particles of two types with frictions 200 and 2000 1/ps at a 5 fs step: under
    Brownian dynamics each type diffuses with D = kT / (m gamma); under Langevin middle the
    stiff type cannot go below the integrator's floor kT dt / (2 m), five times too fast."""
    types = np.arange(400) % 2
    frictions = np.array([200.0, 2000.0])
    step, n_steps = 0.005, 400
    kt = KB * TEMPERATURE
    measured = {}
    for kind in ("brownian", "langevin"):
        integrator = make_integrator(
            kind, step, temperature=TEMPERATURE, types=types, type_frictions=frictions, seed=5
        )
        simulation = context(400, integrator)
        start = positions(simulation)
        integrator.step(n_steps)
        squared = ((positions(simulation) - start) ** 2).sum(axis=1)
        measured[kind] = [squared[types == k].mean() / (6 * n_steps * step) for k in (0, 1)]
    for k, gamma in enumerate(frictions):
        assert measured["brownian"][k] == pytest.approx(kt / (MASS * gamma), rel=0.15)
    floor = kt * step / (2 * MASS)
    assert measured["langevin"][1] == pytest.approx(floor, rel=0.15)
    assert measured["langevin"][1] > 4 * kt / (MASS * frictions[1])


def test_frictions_are_named_by_bead_type():
    assert named_frictions(["CH", "CL", "UR"], {"UR": 4.0}, 1.0).tolist() == [1.0, 1.0, 4.0]
    with pytest.raises(ValueError, match=r"simulate.frictions names \['W'\]"):
        named_frictions(["CH", "CL"], {"W": 2.0}, 1.0)


def test_the_fit_recovers_a_known_friction(tmp_path):
    """A CG fluid run at friction 5 1/ps is the "reference": calibration runs of the same
    model at 1, 10 and 30 1/ps, fitted per bead type, give back about 5 for both types."""
    from conftest import NETWORK, PRIOR, random_liquid

    from cgkd.models import build_potential
    from cgkd.observables.trajectory import Trajectory
    from cgkd.simulation import export_torchscript
    from cgkd.simulation.friction import fit_friction, observed_by_type
    from cgkd.simulation.md import MDSettings, run_cg_md

    species = torch.as_tensor(np.arange(40) % 2)
    model = build_potential([NETWORK], PRIOR)
    with torch.no_grad():
        for network in model.networks:
            network.energy_scale.fill_(0.0)  # the repulsive prior alone: a soft-sphere fluid
    path = export_torchscript(model, species, tmp_path / "fluid.ts")
    positions, box = random_liquid(40, 1.5, seed=3), np.eye(3) * 1.5
    names = ["A", "B"] * 20

    def diffusion(friction: float) -> dict[str, tuple[float, float]]:
        settings = MDSettings(
            friction=friction, steps=3000, report_interval=20, timestep=0.004, seed=2
        )
        out = tmp_path / f"gamma_{friction:g}"
        result = run_cg_md(
            path, positions, box, np.full(40, 18.0), settings, out, bead_names=names, progress=False
        )
        assert result.stable, result.message
        trajectory = Trajectory.from_dcd(
            result.trajectory,
            result.topology,
            dt=0.08,
            types=species.numpy(),
            type_names=["A", "B"],
        )
        return observed_by_type(trajectory, "longer runs")

    reference = diffusion(5.0)
    tried = (1.0, 10.0, 30.0)
    runs = {gamma: diffusion(gamma) for gamma in tried}
    for kind in ("A", "B"):
        fit = fit_friction(tried, [runs[g][kind][0] for g in tried], reference[kind][0])
        assert 3.0 < fit.matched < 8.0, (kind, fit)


def test_refinement_steps_converge_where_the_line_is_only_approximate():
    """With 1/D curved in the friction (1 + 0.5 g + 0.002 g^2), the least-squares line of the
    runs at 1, 10 and 30 1/ps misses a target at 100 1/ps; two secant steps at the fitted
    frictions land within 1 %."""
    from cgkd.simulation.friction import fit_friction

    def diffusion(gamma: float) -> float:
        return 1.0 / (1.0 + 0.5 * gamma + 0.002 * gamma**2)

    frictions = [1.0, 10.0, 30.0]
    fit = fit_friction(frictions, [diffusion(g) for g in frictions], diffusion(100.0))
    first_error = abs(fit.matched - 100.0)
    assert first_error > 10.0
    for _ in range(2):
        frictions.append(fit.matched)
        fit = fit_friction(
            frictions, [diffusion(g) for g in frictions], diffusion(100.0), local=True
        )
    assert fit.matched == pytest.approx(100.0, rel=0.01)


def test_a_secant_through_two_runs_at_nearly_the_same_diffusion_does_not_overshoot():
    """1/D = 20 gamma, but noise puts the runs at 1000 and 1030 1/ps at almost the same D:
    their secant would send the friction to about 4000 1/ps; the refinement keeps the overall
    slope instead and lands near the true 1050."""
    from cgkd.simulation.friction import fit_friction

    frictions = [100.0, 300.0, 1000.0, 1030.0]
    inverse = [2000.0, 6000.0, 20000.0, 20010.0]
    fit = fit_friction(frictions, [1.0 / y for y in inverse], 1.0 / 21000.0, local=True)
    assert 1000.0 < fit.matched < 1150.0


def test_a_reference_too_short_for_a_diffusion_coefficient_is_a_one_line_error():
    from cgkd.observables.trajectory import Trajectory
    from cgkd.simulation.friction import observed_by_type

    two_frames = Trajectory(
        np.zeros((2, 4, 3)),
        np.repeat(np.eye(3)[None], 2, axis=0),
        types=np.zeros(4, int),
        type_names=["W"],
        times=np.array([0.0, 1.0]),
    )
    message = r"no diffusion coefficient \(MSD, nm\^2/ps\) of W: .*; set it longer"
    with pytest.raises(ValueError, match=message):
        observed_by_type(two_frames, "set it longer")


def test_vacf_targets_of_free_beads_are_kt_over_m_gamma_and_one_over_gamma(tmp_path):
    """Free beads of two types under Langevin at 5 and 20 1/ps, recorded densely and written
    to a segment file: each type's Green-Kubo D is kT / (m gamma) and its VACF falls to 1/e
    at t = 1 / gamma."""
    from openmm import app

    from cgkd.simulation.dense import load_segment, record_dense, save_segment
    from cgkd.simulation.friction import observed_by_type

    n, frictions = 200, np.array([5.0, 20.0])
    types = np.arange(n) % 2
    integrator = make_integrator(
        "langevin", STEP, temperature=TEMPERATURE, types=types, type_frictions=frictions, seed=4
    )
    topology = app.Topology()
    residue = topology.addResidue("W", topology.addChain())
    for _ in range(n):
        topology.addAtom("W", None, residue)
    free = context(n, openmm.VerletIntegrator(STEP))  # only for its system and positions
    simulation = app.Simulation(
        topology, free.getSystem(), integrator, openmm.Platform.getPlatformByName("Reference")
    )
    simulation.context.setPositions(positions(free))
    simulation.context.setVelocitiesToTemperature(TEMPERATURE, 9)
    recorded = record_dense(
        simulation, STEP, 8.0, equilibration=0.5, types=types, type_names=["A", "B"]
    )
    assert recorded.dt == pytest.approx(0.01) and recorded.has_velocities
    save_segment(recorded, tmp_path / "segment.npz")
    segment = load_segment(tmp_path / "segment.npz", "free beads")
    np.testing.assert_array_equal(segment.frame(7).velocities, recorded.frame(7).velocities)
    kt = KB * TEMPERATURE
    green_kubo = observed_by_type(segment, "longer", target="vacf", max_lag=1.0, n_blocks=4)
    decay = observed_by_type(segment, "longer", target="vacf_decay", max_lag=1.0, n_blocks=4)
    for name, gamma in zip(("A", "B"), frictions, strict=True):
        assert green_kubo[name][0] == pytest.approx(kt / (MASS * gamma), rel=0.15), name
        assert decay[name][0] == pytest.approx(1.0 / gamma, rel=0.1), name


def test_a_vacf_target_needs_velocities_and_a_built_in_system(tmp_path):
    """Brownian dynamics has no velocities, and your own data no dense AA segment: both are
    one-line errors naming simulate.calibration_target=msd."""
    from cgkd.config import compose
    from cgkd.simulation.md import MDSettings
    from cgkd.stages import Pipeline, Request
    from cgkd.stages.registry import STAGES

    with pytest.raises(ValueError, match=r"use simulate\.calibration_target=msd"):
        MDSettings(integrator="brownian", friction="matched", calibration_target="vacf")
    with pytest.raises(ValueError, match="calibration_target 'gk' is unknown"):
        MDSettings(calibration_target="gk")
    data = tmp_path / "run.trr"
    cfg = compose(
        [
            "simulate.friction=matched",
            "simulate.calibration_target=vacf",
            f"input.trajectory={data}",
            f"input.topology={tmp_path / 'top.pdb'}",
        ]
    )
    stages = {name: stage for name, stage in STAGES.items() if name != "import"}
    with pytest.raises(ValueError, match=rf"your data \({data}\) has none: use simulate"):
        Pipeline(cfg, stages).plan(Request("segment"))
