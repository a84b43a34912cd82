"""The OpenMM engine: platform choice, the run loop against plain integrator steps, reporters
counted from a start step, failures as outcomes, and resume cutting files back."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from conftest import argon_lattice

from cgkd.simulation.engine import (
    create_simulation,
    make_integrator,
    resume,
    run,
    select_platform,
    start,
)
from cgkd.simulation.reporters import (
    CallbackReporter,
    CheckpointReporter,
    StabilityReporter,
    StateReporter,
    TrajectoryReporter,
)
from cgkd.simulation.system import openmm_seed

NM = openmm.unit.nanometer


def _argon() -> tuple[openmm.System, np.ndarray, np.ndarray]:
    """The test's argon lattice (see conftest.argon_lattice)."""
    return argon_lattice(3, 0.4, 0.55)


def test_platform_choice_sets_threads_only_where_the_platform_has_them():
    platform, properties = select_platform("CPU", 2, deterministic=True)
    assert platform.getName() == "CPU"
    assert properties == {"DeterministicForces": "true", "Threads": "2"}
    assert select_platform("CPU")[1] == {}
    assert select_platform("Reference", 2, deterministic=True)[1] == {}
    assert select_platform("auto")[0].getName() in ("CUDA", "CPU")
    with pytest.raises(ValueError, match="platform 'Metal' is not available here"):
        select_platform("Metal")
    with pytest.raises(ValueError, match="integrator 'leapfrog' is unknown"):
        make_integrator("leapfrog", 0.002)


def test_run_with_reporters_steps_like_the_bare_integrator():
    """Reports every 7 steps from step 3 (unwrapped positions): the frames and their steps are
    those of plain integrator steps with a getState at the same steps."""
    system, positions, box = _argon()
    seed, temperature = 5, 120.0

    def integrator() -> openmm.Integrator:
        return make_integrator("langevin", 0.004, temperature=temperature, seed=seed)

    simulation = create_simulation(system, integrator(), platform="CPU", threads=1)
    start(simulation, positions, box=box, temperature=temperature, seed=seed)
    frames, steps = [], []

    def keep(simulation, state) -> None:
        frames.append(state.getPositions(asNumpy=True).value_in_unit(NM))
        steps.append(simulation.currentStep)

    recorder = CallbackReporter(7, keep, ("positions",), start=3, periodic=False)
    outcome = run(simulation, 40, [recorder])
    assert outcome.stable and outcome.message == "completed" and outcome.last_good_step == 40
    assert steps == [3, 10, 17, 24, 31, 38]

    platform, properties = select_platform("CPU", 1)
    bare = openmm.Context(system, integrator(), platform, properties)
    bare.setPositions(positions)
    bare.setVelocitiesToTemperature(temperature * openmm.unit.kelvin, openmm_seed(seed))
    expected, done = [], 0
    for step in steps:
        bare.getIntegrator().step(step - done)
        done = step
        expected.append(
            bare.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(NM)
        )
    assert np.array_equal(np.stack(frames), np.stack(expected))


def test_a_run_that_goes_bad_is_an_outcome_with_the_last_good_frame():
    system, positions, box = _argon()
    simulation = create_simulation(system, make_integrator("verlet", 0.004), platform="Reference")
    start(simulation, positions, box=box, temperature=100.0)
    monitor = StabilityReporter(5, min_distance=0.01, max_temperature=1.0)  # 1 K: fails at once
    outcome = run(simulation, 50, [monitor])
    assert not outcome.stable and outcome.failed_step == 5 and outcome.last_good_step == 0
    assert outcome.message.startswith("unstable at step 5: temperature ran away")
    assert np.array_equal(monitor.last_good, positions)


def test_resume_cuts_the_files_back_to_the_checkpoint(tmp_path):
    """A run to step 20 with a checkpoint kept from step 10 resumes there: the DCD and the
    CSV hold the frames and rows up to step 10 and go on to the same step 20."""
    system, positions, box = _argon()

    def simulation_and_reporters():
        simulation = create_simulation(
            system, make_integrator("langevin", 0.004, seed=2), platform="Reference"
        )
        reporters = [
            TrajectoryReporter(tmp_path / "t.dcd", 5),
            StateReporter(tmp_path / "s.csv", 5),
            CheckpointReporter(tmp_path / "c.chk", 10),
        ]
        return simulation, reporters

    simulation, reporters = simulation_and_reporters()
    assert not resume(simulation, tmp_path / "c.chk", reporters)
    start(simulation, positions, box=box, temperature=100.0, seed=2)
    run(simulation, 10, reporters)
    saved = (tmp_path / "c.chk").read_bytes()
    simulation, reporters = simulation_and_reporters()
    assert resume(simulation, tmp_path / "c.chk", reporters)
    run(simulation, 10, reporters)
    straight = (tmp_path / "t.dcd").read_bytes(), (tmp_path / "s.csv").read_text()
    assert len(straight[1].splitlines()) == 1 + 4

    (tmp_path / "c.chk").write_bytes(saved)  # "killed" after step 10's checkpoint
    simulation, reporters = simulation_and_reporters()
    assert resume(simulation, tmp_path / "c.chk", reporters)
    assert simulation.currentStep == 10
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 2
    run(simulation, 10, reporters)
    rows = [line.split(",")[:6] for line in (tmp_path / "s.csv").read_text().splitlines()]
    assert rows == [line.split(",")[:6] for line in straight[1].splitlines()]  # but the speed
    assert (tmp_path / "t.dcd").read_bytes() == straight[0]
