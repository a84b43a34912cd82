"""The analysis suite adapts to the system: shells from the first minimum of g(r), the
tetrahedral order only for water-like networks, and observables the data cannot give skipped."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import openmm
import pytest
from omegaconf import OmegaConf
from openmm import unit

from cgkd.observables import NotComputableError, ObservableResult, Trajectory, first_minimum
from cgkd.observables.rdf import RDF, coordination_number
from cgkd.observables.settings import AnalysisSettings
from cgkd.observables.suite import evaluate

#: Argon-like Lennard-Jones: sigma (nm), epsilon (kJ/mol, 120 K), mass (amu).
SIGMA, EPSILON, MASS = 0.34, 0.998, 39.95
FCC = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)]
DIAMOND = FCC + [(x + 0.25, y + 0.25, z + 0.25) for x, y, z in FCC]


def default_settings(**changes: dict) -> dict:
    """The default analysis settings (the AnalysisSettings schema) as a dict, with sections
    updated from ``changes``."""
    settings = OmegaConf.to_container(OmegaConf.structured(AnalysisSettings))
    for section, values in changes.items():
        settings[section].update(values)
    return settings


@pytest.fixture(scope="module")
def argon() -> Trajectory:
    """A Lennard-Jones liquid at rho sigma^3 = 0.8, kT = epsilon (120 K): 256 particles melted
    from fcc in OpenMM (Langevin, 10 fs), then 60 frames 0.5 ps apart."""
    n_cells, density = 4, 0.8
    length = (4 * n_cells**3 / density) ** (1.0 / 3.0) * SIGMA
    cells = np.array(list(itertools.product(range(n_cells), repeat=3)), dtype=float)
    positions = (cells[:, None] + np.asarray(FCC)[None]).reshape(-1, 3) * (length / n_cells)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * length))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(2.5 * SIGMA)
    for _ in positions:
        system.addParticle(MASS)
        force.addParticle(0.0, SIGMA, EPSILON)
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(120.0, 5.0, 0.01)
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": "1"})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(120.0, 1)
    integrator.step(3000)
    frames = []
    for _ in range(60):
        integrator.step(50)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    boxes = np.tile(np.eye(3) * length, (len(frames), 1, 1))
    return Trajectory(np.array(frames), boxes, dt=0.5, type_names=["AR"], name="argon")


def diamond(types: list[int] | None = None, type_names: list[str] | None = None) -> Trajectory:
    """20 frames of a diamond lattice (a = 0.5 nm, 216 beads) with 0.01 nm Gaussian jitter: four
    neighbours at 0.217 nm, the next twelve at 0.354 nm."""
    rng = np.random.default_rng(2)
    a, n_cells = 0.5, 3
    cells = np.array(list(itertools.product(range(n_cells), repeat=3)), dtype=float)
    sites = (cells[:, None] + np.asarray(DIAMOND)[None]).reshape(-1, 3) * a
    positions = sites + rng.normal(0.0, 0.01, (20, len(sites), 3))
    boxes = np.tile(np.eye(3) * n_cells * a, (20, 1, 1))
    return Trajectory(positions, boxes, dt=1.0, types=types, type_names=type_names)


def test_first_minimum_of_a_damped_oscillation_is_found_between_bins():
    """g = 1 + exp(-r) cos(2 pi r / 0.3) (r in nm) above 0.2 nm has its first minimum after the
    peak at 0.3 nm where tan(2 pi r / 0.3) = -0.3 / (2 pi), just below 0.45 nm."""
    r = np.linspace(0.0025, 1.2, 240)
    g = np.where(r > 0.2, 1.0 + np.exp(-r) * np.cos(2.0 * np.pi * r / 0.3), 0.0)
    exact = 0.3 / (2.0 * np.pi) * (3.0 * np.pi - np.arctan(0.3 / (2.0 * np.pi)))
    result = ObservableResult("rdf", r, g, np.zeros_like(g), "r", "g")
    assert abs(first_minimum(result) - exact) < 0.1 * (r[1] - r[0])
    with pytest.raises(NotComputableError, match=r"no first minimum; raise r_max"):
        inside = r < 0.4  # the curve ends inside the first shell
        first_minimum(ObservableResult("rdf", r[inside], g[inside], g[inside] * 0, "r", "g"))


def test_lennard_jones_first_shell_ends_at_one_and_a_half_sigma(argon):
    """The first minimum of a Lennard-Jones liquid's g(r) near its triple point lies at about
    1.5 sigma (Verlet 1968) and holds about 12 neighbours, as in close packing."""
    rdf = RDF(1.1, 110).run(argon)
    r1 = first_minimum(rdf)
    assert 1.45 * SIGMA < r1 < 1.6 * SIGMA
    n = coordination_number(rdf)
    assert 10.5 < np.interp(r1, n.x, n.y) < 13.5


def test_auto_shells_follow_the_lennard_jones_liquid(argon):
    analysis = evaluate(default_settings(rdf={"r_max": 1.1, "n_bins": 110}), argon)
    r1 = analysis.shell["radius"]
    assert 1.45 * SIGMA < r1 < 1.6 * SIGMA
    for setting in ("adf.cutoff", "cdf.r_max", "steinhardt.cutoff", "coordination.cutoff"):
        assert analysis.auto[setting] == r1
    assert analysis.auto["local_density.radius"] == pytest.approx(1.5 * r1)
    assert analysis.settings["adf"]["cutoff"] == r1
    # Nothing is closer than about 0.9 sigma: the CDF map starts there.
    assert 0.8 * SIGMA < analysis.auto["cdf.r_min"] < 0.95 * SIGMA
    # Not a tetrahedral network: about 12 neighbours in the first shell.
    assert analysis.auto["tetrahedral.enabled"] is False and "tetrahedral" not in analysis.results
    assert analysis.skipped == {}
    # Counting neighbours within r1 directly agrees with integrating g(r) up to r1.
    counts = analysis.results["coordination numbers"]
    assert counts.attrs["mean"] == pytest.approx(analysis.shell["coordination"], rel=0.02)
    assert counts.attrs["fraction_outside"] == 0.0  # max_count auto leaves room
    json.dumps({**analysis.shell, **analysis.auto})


def test_a_number_wins_over_auto(argon):
    settings = default_settings(rdf={"r_max": 1.1, "n_bins": 110}, adf={"cutoff": 0.4})
    analysis = evaluate(settings, argon)
    assert analysis.settings["adf"]["cutoff"] == 0.4 and "adf.cutoff" not in analysis.auto
    assert analysis.settings["steinhardt"]["cutoff"] == analysis.shell["radius"]
    # The reference's values measure the other sources alike: nothing is resolved again.
    again = evaluate(analysis.settings, argon)
    assert again.auto == {} and again.settings == analysis.settings


def test_tetrahedral_auto_is_on_for_one_species_in_a_tetrahedral_network():
    analysis = evaluate(default_settings(rdf={"r_max": 0.7, "n_bins": 70}), diamond())
    # The first minimum is the middle of the empty gap between 0.217 and 0.354 nm.
    assert 0.26 < analysis.shell["radius"] < 0.31
    assert analysis.shell["coordination"] == pytest.approx(4.0)
    assert analysis.auto["tetrahedral.enabled"] is True
    assert analysis.results["tetrahedral"].attrs["mean"] > 0.95


def test_tetrahedral_auto_is_off_for_more_than_one_species():
    zincblende = diamond(types=[0, 0, 0, 0, 1, 1, 1, 1] * 27, type_names=["ZN", "S"])
    analysis = evaluate(default_settings(rdf={"r_max": 0.7, "n_bins": 70}), zincblende)
    assert analysis.shell["coordination"] == pytest.approx(4.0)
    assert analysis.auto["tetrahedral.enabled"] is False and "tetrahedral" not in analysis.results
    # Each species pair has its own first minimum: in the gaps after Zn-S's 4 at 0.217 nm (next
    # 12 at 0.415 nm) and after Zn-Zn's 12 at 0.354 nm (fcc; next 6 at 0.5 nm).
    assert 0.28 < analysis.shell["pairs"]["rdf ZN-S"] < 0.36
    assert 0.38 < analysis.shell["pairs"]["rdf ZN-ZN"] < 0.47


def test_without_a_first_minimum_the_shell_observables_are_skipped_with_the_setting(argon):
    settings = default_settings(rdf={"r_max": 1.3 * SIGMA, "n_bins": 40})
    analysis = evaluate(settings, argon)
    assert analysis.shell["radius"] is None and "raise r_max" in analysis.shell["problem"]
    shelled = {"adf", "cdf", "q4", "q6", "coordination numbers", "local density"}
    assert set(analysis.skipped) == shelled
    assert "set analysis.adf.cutoff" in analysis.skipped["adf"]
    assert "set analysis.steinhardt.cutoff" in analysis.skipped["q6"]
    assert not shelled & set(analysis.results)
    assert {"rdf", "n(r)", "S(q)", "msd"} <= set(analysis.results)
    assert "tetrahedral" not in analysis.results


def test_too_short_a_trajectory_skips_the_msd_and_the_rest_completes(argon):
    """1 ps (3 frames 0.5 ps apart): too short for 5 blocks; as two replicas, each run is a
    block and lags 0 and 0.5 ps leave no range for the diffusion fit."""
    frames = [argon.frame(t) for t in range(3)]
    short = Trajectory(
        np.stack([f.positions for f in frames]), np.stack([f.box for f in frames]), dt=0.5
    )
    settings = default_settings(rdf={"r_max": 1.1, "n_bins": 110})
    analysis = evaluate(settings, short)
    assert set(analysis.skipped) == {"msd"}
    assert (
        "n_blocks=5" in analysis.skipped["msd"]
        and "(settings: analysis.msd)" in analysis.skipped["msd"]
    )
    assert {"rdf", "adf", "cdf", "q6", "coordination numbers"} <= set(analysis.results)

    replicas = evaluate(copy.deepcopy(analysis.settings), [short, short])
    assert set(replicas.skipped) == {"msd"}
    assert "fit range" in replicas.skipped["msd"] and "fit_start" in replicas.skipped["msd"]


def test_each_bead_type_gets_its_own_diffusion_coefficient(argon):
    """The argon liquid labelled as two types (alternate atoms): an MSD per type besides the
    total, and the total D is the count-weighted mean of the types' (the fit is linear)."""
    positions = np.stack([argon.frame(t).positions for t in range(argon.n_frames)])
    boxes = np.stack([argon.frame(t).box for t in range(argon.n_frames)])
    types = np.arange(positions.shape[1]) % 2
    labelled = Trajectory(positions, boxes, dt=0.5, types=types, type_names=["A", "B"])
    analysis = evaluate(default_settings(rdf={"r_max": 1.1, "n_bins": 110}), labelled)
    d = {name: analysis.results[name].attrs["D"] for name in ("msd", "msd A", "msd B")}
    assert d["msd A"] != d["msd B"]
    assert d["msd"] == pytest.approx(0.5 * (d["msd A"] + d["msd B"]), rel=1e-9)
    assert d["msd"] > 0


def test_the_diffusion_of_every_source_is_fitted_over_one_lag_window(argon):
    """A reference of 29.5 ps and a CG run of half its length: each alone would fit D up to
    half a block of its own (2.95 and 1.45 ps); the analysis gives both the shorter, and a
    run that went bad does not count (stable_runs)."""
    from cgkd.analysis import with_shared_msd_window
    from cgkd.observables.dynamics import shared_max_lag

    half = argon.n_frames // 2
    short = Trajectory(
        np.stack([argon.frame(t).positions for t in range(half)]),
        np.stack([argon.frame(t).box for t in range(half)]),
        dt=0.5,
    )
    settings = default_settings(rdf={"r_max": 1.1, "n_bins": 110})
    shared = with_shared_msd_window(settings, [[argon], [short]])
    window = shared["msd"]["max_lag"]
    assert window == pytest.approx(0.5 * short.duration / 5)
    assert window == shared_max_lag([[argon.duration], [short.duration]], 5)
    lags = [evaluate(shared, t).results["msd"].attrs["max_lag"] for t in (argon, short)]
    assert lags[0] == lags[1] <= window
    # several runs: each is a block, so half the shortest run
    assert shared_max_lag([[100.0], [30.0, 20.0]], 5) == pytest.approx(10.0)
    given = default_settings(msd={"max_lag": 1.0})
    assert with_shared_msd_window(given, [[argon], [short]])["msd"]["max_lag"] == 1.0
