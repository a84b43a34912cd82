"""Tests for cgkd.observables.dynamics: MSD, VACF and diffusion ratios against known physics."""

from __future__ import annotations

import MDAnalysis
import numpy as np
import openmm
import pytest
from MDAnalysis.analysis.msd import EinsteinMSD
from MDAnalysis.coordinates.memory import MemoryReader
from openmm import unit

from cgkd.observables.base import NotComputableError, ObservableResult
from cgkd.observables.dynamics import MSD, VACF, diffusion_ratio
from cgkd.observables.trajectory import Trajectory
from cgkd.units import ANGSTROM_PER_NM, kt

LENGTH = 3.0  # nm, cubic box edge


def cubic_boxes(n_frames: int) -> np.ndarray:
    return np.tile(np.eye(3) * LENGTH, (n_frames, 1, 1))


def random_walk(n_frames: int, n_beads: int, d: float, dt: float, seed: int) -> np.ndarray:
    """Unwrapped Brownian positions [T, N, 3] (nm): Gaussian steps of variance 2 D dt per axis."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, np.sqrt(2.0 * d * dt), (n_frames, n_beads, 3))
    steps[0] = rng.uniform(0.0, LENGTH, (n_beads, 3))
    return np.cumsum(steps, axis=0)


def brownian(n_frames: int, n_beads: int = 100, d: float = 0.05, dt: float = 0.1, seed: int = 0):
    positions = random_walk(n_frames, n_beads, d, dt, seed)
    return Trajectory(positions, cubic_boxes(n_frames), dt=dt, name=f"walk{seed}")


def pulls(result: ObservableResult, expected: np.ndarray) -> np.ndarray:
    """(y - expected) / yerr at the lags > 0."""
    return (result.y[1:] - expected[1:]) / result.yerr[1:]


def test_msd_random_walk_is_6dt_and_wrapping_does_not_matter():
    d, dt = 0.05, 0.1
    positions = random_walk(2000, 200, d, dt, seed=1)
    walk = Trajectory(positions, cubic_boxes(2000), dt=dt)
    result = MSD().run(walk, n_blocks=10)
    # Default lags: half a block (2000 / 10 frames); fit over the lags within 20%..80% of them.
    assert result.x[-1] == pytest.approx(99 * dt)
    assert result.attrs["fit_start"] == pytest.approx(2.0)  # first lag >= 1.98 ps
    assert result.attrs["fit_stop"] == pytest.approx(7.9)  # last lag <= 7.92 ps
    rms = np.sqrt(np.mean(pulls(result, 6.0 * d * result.x) ** 2))
    assert 0.3 < rms < 3.0
    assert abs(result.attrs["D"] - d) < 4.0 * result.attrs["D_err"]
    assert result.attrs["D_err"] < 0.05 * d

    wrapped = MSD().run(Trajectory(positions % LENGTH, cubic_boxes(2000), dt=dt), n_blocks=10)
    assert np.abs(positions % LENGTH - positions).max() > LENGTH  # beads did cross the box
    np.testing.assert_allclose(wrapped.y[1:], result.y[1:], rtol=1e-10)
    np.testing.assert_allclose(wrapped.yerr[1:], result.yerr[1:], rtol=1e-8)
    assert wrapped.attrs["D"] == pytest.approx(result.attrs["D"], rel=1e-10)


def test_msd_matches_mdanalysis_einstein_msd():
    n_frames, n_beads, dt = 150, 40, 0.2
    positions = random_walk(n_frames, n_beads, d=0.1, dt=dt, seed=2)
    # Round through float32 Angstrom, as MDAnalysis stores them, so both see one input.
    angstrom = (positions * ANGSTROM_PER_NM).astype(np.float32)
    universe = MDAnalysis.Universe.empty(n_beads, trajectory=False)
    dimensions = np.array([LENGTH * ANGSTROM_PER_NM] * 3 + [90.0] * 3, dtype=np.float32)
    universe.load_new(angstrom, format=MemoryReader, dimensions=dimensions, dt=dt)
    reference = EinsteinMSD(universe, select="all", msd_type="xyz", fft=False).run()

    nm = angstrom.astype(np.float64) / ANGSTROM_PER_NM
    trajectory = Trajectory(nm, cubic_boxes(n_frames), dt=dt)
    result = MSD(max_lag=(n_frames - 1) * dt).run(trajectory, n_blocks=1)
    np.testing.assert_allclose(result.x, reference.results.delta_t_values, rtol=1e-12)
    np.testing.assert_allclose(
        result.y * ANGSTROM_PER_NM**2, reference.results.timeseries, rtol=1e-10, atol=1e-12
    )
    assert np.all(result.yerr == 0.0) and result.attrs["D_err"] == 0.0


def langevin_free_particles(
    n_particles: int, mass: float, temperature: float, gamma: float, n_frames: int
) -> Trajectory:
    """Non-interacting particles under OpenMM's LangevinMiddleIntegrator, saved every 5 steps."""
    step, every = 0.002, 5
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(mass)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in LENGTH * np.eye(3)))
    integrator = openmm.LangevinMiddleIntegrator(temperature, gamma, step)
    integrator.setRandomNumberSeed(11)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.random.default_rng(3).uniform(0.0, LENGTH, (n_particles, 3)))
    context.setVelocitiesToTemperature(temperature, 5)
    positions = np.empty((n_frames, n_particles, 3))
    velocities = np.empty_like(positions)
    for k in range(n_frames):
        integrator.step(every)
        state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=True)
        positions[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        velocities[k] = state.getVelocities(asNumpy=True).value_in_unit(
            unit.nanometer / unit.picosecond
        )
    return Trajectory(
        positions, cubic_boxes(n_frames), dt=step * every, velocities=velocities, name="langevin"
    )


def test_openmm_langevin_vacf_and_msd_give_einstein_diffusion():
    mass, temperature, gamma = 10.0, 300.0, 10.0  # amu, K, 1/ps
    run = langevin_free_particles(200, mass, temperature, gamma, n_frames=2000)  # 20 ps
    einstein = kt(temperature) / (mass * gamma)  # nm^2/ps

    vacf = VACF(max_lag=1.0).run(run, n_blocks=10)  # C(1 ps) = exp(-10)
    assert 0.3 < np.sqrt(np.mean(pulls(vacf, np.exp(-gamma * vacf.x)) ** 2)) < 3.0
    np.testing.assert_allclose(vacf.y, np.exp(-gamma * vacf.x), atol=0.02)
    assert abs(vacf.attrs["C0"] - 3.0 * kt(temperature) / mass) < 4.0 * vacf.attrs["C0_err"]
    d_vacf, err_vacf = vacf.attrs["D_green_kubo"], vacf.attrs["D_green_kubo_err"]
    assert abs(d_vacf - einstein) < 4.0 * err_vacf
    assert err_vacf < 0.05 * einstein

    # The MSD is linear only for t >> 1/gamma = 0.1 ps: fit from 0.5 ps.
    msd = MSD(max_lag=1.0, fit_start=0.5).run(run, n_blocks=10)
    expected = 6.0 * einstein * (msd.x - (1.0 - np.exp(-gamma * msd.x)) / gamma)
    assert 0.3 < np.sqrt(np.mean(pulls(msd, expected) ** 2)) < 3.0
    assert abs(msd.attrs["D"] - einstein) < 4.0 * msd.attrs["D_err"]

    ratio, ratio_err = diffusion_ratio(msd, vacf)
    assert abs(ratio - 1.0) < 4.0 * ratio_err
    assert ratio_err == pytest.approx(np.hypot(msd.attrs["D_err"], ratio * err_vacf) / d_vacf)


def test_default_fit_range_follows_the_lags_available():
    """Five frames as one block give lags 0, 0.1, 0.2 ps: 20-80 % of them holds only the lag
    0.1 ps, so the fit takes the lags 0.1 and 0.2 ps and still finds D of the random walk."""
    result = MSD().run(brownian(5, n_beads=2000, seed=5), n_blocks=1)
    assert result.x == pytest.approx([0.0, 0.1, 0.2])
    assert (result.attrs["fit_start"], result.attrs["fit_stop"]) == pytest.approx((0.1, 0.2))
    assert result.attrs["D"] == pytest.approx(0.05, rel=0.1)
    # Lags 0 and 0.1 ps leave one lag after 0: nothing to fit, and the message says what to do.
    with pytest.raises(NotComputableError, match=r"fit range 0\.1\.\.0\.1 ps holds 1 lags .* "):
        MSD().run(brownian(3, seed=6), n_blocks=1)


def test_single_precision_frame_times_are_equally_spaced():
    """Times stored as float32 (TRR, DCD, NetCDF) are 0.1 k ps only to about 1e-6 ps; steps that
    far apart are still one spacing, but a real 1 % jitter is not."""
    positions = random_walk(400, 20, 0.05, 0.1, seed=9)
    times = (0.1 * np.arange(400)).astype(np.float32).astype(np.float64)
    assert np.ptp(np.diff(times)) > 1e-6  # uneven at the 1e-6 relative level of float64 checks
    stored = Trajectory(positions, cubic_boxes(400), times=times, name="float32.trr")
    assert stored.dt == pytest.approx(0.1, rel=1e-6)
    assert MSD().run(stored).attrs["dt"] == pytest.approx(0.1, rel=1e-6)
    jitter = times + 0.001 * (np.arange(400) % 2)
    assert Trajectory(positions, cubic_boxes(400), times=jitter).dt is None


def test_block_errors_shrink_with_more_data():
    short = MSD(max_lag=2.0).run(brownian(400, seed=3), n_blocks=8)
    long = MSD(max_lag=2.0).run(brownian(3200, seed=4), n_blocks=8)
    # 8x the frames: errors should fall by about sqrt(8) ~ 2.8.
    assert long.yerr[1:].mean() < 0.6 * short.yerr[1:].mean()
    assert long.attrs["D_err"] < 0.6 * short.attrs["D_err"]
    for result in (short, long):
        assert abs(result.attrs["D"] - 0.05) < 4.0 * result.attrs["D_err"]


def test_independent_runs_are_the_blocks():
    runs = [brownian(300, seed=10 + k) for k in range(4)]
    pooled = MSD(max_lag=5.0).run(runs)
    alone = [MSD(max_lag=5.0).run(run, n_blocks=1) for run in runs]
    curves = np.array([r.y for r in alone])
    # Equally long runs weigh the same: mean and standard error over the four runs.
    np.testing.assert_allclose(pooled.y, curves.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(pooled.yerr, curves.std(axis=0, ddof=1) / 2.0, rtol=1e-10)
    slopes = np.array([r.attrs["D"] for r in alone])
    assert pooled.attrs["D_err"] == pytest.approx(slopes.std(ddof=1) / 2.0, rel=1e-10)
    assert pooled.attrs["n_runs"] == 4 and pooled.attrs["n_frames"] == 1200


def test_msd_per_species_sees_its_own_diffusion():
    n_frames, dt = 1000, 0.1
    positions = np.concatenate(
        [random_walk(n_frames, 100, 0.02, dt, seed=5), random_walk(n_frames, 50, 0.1, dt, seed=6)],
        axis=1,
    )
    types = np.repeat([0, 1], [100, 50])
    run = Trajectory(positions, cubic_boxes(n_frames), dt=dt, types=types, type_names=["A", "B"])
    slow, fast = MSD(species="A").run(run), MSD(species=1).run(run)
    assert slow.name == "msd A" and fast.attrs["n_beads"] == 50
    assert abs(slow.attrs["D"] - 0.02) < 4.0 * slow.attrs["D_err"]
    assert abs(fast.attrs["D"] - 0.1) < 4.0 * fast.attrs["D_err"]
    only_b = Trajectory(positions[:, 100:], cubic_boxes(n_frames), dt=dt)
    np.testing.assert_allclose(MSD().run(only_b).y, fast.y, rtol=1e-12)


def test_diffusion_ratio_propagates_errors():
    attrs = {"D": 2.0, "D_err": 0.2}
    cg = ObservableResult("msd", [0.0, 1.0], [0.0, 12.0], [0.0, 1.0], "t", "MSD", attrs=attrs)
    reference = ObservableResult.from_dict(
        {**cg.to_dict(), "name": "vacf", "attrs": {"D_green_kubo": 1.0, "D_green_kubo_err": 0.1}}
    )
    ratio, err = diffusion_ratio(cg, reference)
    assert ratio == pytest.approx(2.0) and err == pytest.approx(2.0 * np.sqrt(0.02))
    with pytest.raises(ValueError, match="'rdf' has no attrs"):
        diffusion_ratio(cg, ObservableResult("rdf", [0.0], [1.0], [0.0], "r", "g"))


def test_bad_inputs_raise_one_line_errors():
    positions = random_walk(50, 5, 0.05, 0.1, seed=7)
    no_time = Trajectory(positions, cubic_boxes(50), name="untimed.dcd")
    with pytest.raises(ValueError, match=r"untimed\.dcd: no frame times for msd; give .*dt="):
        MSD().run(no_time)
    with pytest.raises(ValueError, match=r"untimed\.dcd: no velocities"):
        VACF().run(no_time)

    # Odd frames are off the 0.1 ps grid: uneven unless step=2 picks the even ones.
    times = 0.1 * np.arange(50) + 0.01 * (np.arange(50) % 2)
    uneven = Trajectory(positions, cubic_boxes(50), times=times, name="uneven")
    with pytest.raises(ValueError, match="uneven: selected frames are not equally spaced"):
        MSD().run(uneven)
    assert MSD().run(uneven, step=2, n_blocks=2).attrs["dt"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one spacing"):
        MSD().run([brownian(50, dt=0.1), brownian(50, dt=0.2)])

    walk = brownian(50)
    with pytest.raises(ValueError, match=r"fit_stop=0\.2 ps must be > fit_start=0\.5"):
        MSD(fit_start=0.5, fit_stop=0.2)
    with pytest.raises(ValueError, match="max_lag must be > 0"):
        VACF(max_lag=0.0)
    with pytest.raises(ValueError, match=r"fit_stop=3\.0 ps is beyond the longest lag"):
        MSD(max_lag=2.0, fit_stop=3.0).run(walk, n_blocks=2)
    with pytest.raises(ValueError, match=r"fit_start=2\.5 ps is not below"):
        MSD(max_lag=2.0, fit_start=2.5).run(walk, n_blocks=2)
    with pytest.raises(ValueError, match="holds 1 lags"):
        MSD(max_lag=2.0, fit_start=1.05, fit_stop=1.15).run(walk, n_blocks=2)
    with pytest.raises(ValueError, match=r"max_lag=3\.0 ps needs blocks of 31 frames .* has 25"):
        MSD(max_lag=3.0).run(walk, n_blocks=2)
    with pytest.raises(ValueError, match="shortest of n_blocks=30 blocks of the run has 1 frames"):
        MSD().run(walk, n_blocks=30)
    with pytest.raises(ValueError, match="shortest of n_blocks=60 blocks of the run has 0 frames"):
        MSD(max_lag=0.5).run(walk, n_blocks=60)
    with pytest.raises(ValueError, match="shortest of the runs has 40"):
        MSD(max_lag=4.5).run([walk, brownian(40, seed=8)])
    with pytest.raises(ValueError, match="unknown species 'X'"):
        MSD(species="X").run(walk)
