"""Energy conservation of an exported model in NVE: drift and fluctuation of the total energy.

The run is thermalised with Langevin dynamics at the time step under test, then continued
with velocity Verlet (NVE). The drift is the slope of a straight line fitted to the total
energy, per ns and per bead; the fluctuation is the RMS of the energy about that line, per
bead. For a time-reversible integrator the fluctuation grows as the time step squared; a
drift that grows with the time step means the step is too long for the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# isort: off
from cgkd.simulation.engine import (  # before openmm
    create_simulation,
    make_integrator,
    model_simulation,
    run,
    start,
)
import openmm
import openmm.app as app
import openmm.unit as unit
# isort: on

from cgkd.simulation.reporters import CallbackReporter
from cgkd.units import kt


@dataclass(frozen=True)
class DriftResult:
    """Total-energy conservation of one NVE run (kJ/mol, ns; ``*_kt`` in units of k_B T)."""

    timestep: float
    n_beads: int
    drift_per_ns_per_bead: float
    fluctuation_per_bead: float
    drift_kt_per_ns_per_bead: float
    stable: bool
    times_ps: np.ndarray
    total_energies: np.ndarray


def nve_energy_drift(
    model_path: str,
    positions: np.ndarray,
    box: np.ndarray,
    masses: np.ndarray,
    timestep: float,
    *,
    temperature: float = 300.0,
    equilibration_steps: int = 500,
    equilibration_timestep: float = 0.001,
    steps: int = 2000,
    report_interval: int = 10,
    seed: int = 0,
    platform: str = "auto",
) -> DriftResult:
    """Drift and fluctuation of the total energy in NVE at ``timestep`` (ps), from
    ``positions`` [N, 3] nm in ``box`` [3, 3] nm, after ``equilibration_steps`` of Langevin
    dynamics at ``temperature`` K with ``equilibration_timestep`` (ps; the same for every
    ``timestep``, so that runs at different time steps start from the same state)."""
    thermostat = make_integrator(
        "langevin", equilibration_timestep, temperature=temperature, friction=1.0, seed=seed
    )
    simulation = model_simulation(model_path, masses, box, thermostat, platform=platform)
    start(simulation, positions, minimize=(10.0, 200), temperature=temperature, seed=seed)
    equilibrated = run(simulation, equilibration_steps)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    system, topology = simulation.system, simulation.topology
    del simulation  # one model context at a time
    verlet = make_integrator("verlet", timestep)
    nve = create_simulation(system, verlet, topology=topology, platform=platform)
    start(nve, state.getPositions(), velocities=state.getVelocities())
    energies = [_total_energy(nve.context.getState(getEnergy=True))]

    def record(simulation: app.Simulation, state: openmm.State) -> None:
        energies.append(_total_energy(state))

    reporter = CallbackReporter(report_interval, record, ("energy",))
    outcome = run(nve, steps // report_interval * report_interval, [reporter])
    total = np.asarray(energies)
    times = np.arange(len(total)) * report_interval * timestep
    n_beads = len(masses)
    stable = equilibrated.stable and outcome.stable and bool(np.isfinite(total).all())
    if stable:
        slope, intercept = np.polyfit(times, total, 1)
        residual = total - (slope * times + intercept)
        drift = slope * 1000.0 / n_beads  # kJ/mol/ps -> kJ/mol/ns, per bead
        fluctuation = float(np.sqrt(np.mean(residual**2))) / n_beads
    else:
        drift, fluctuation = float("nan"), float("nan")
    return DriftResult(
        timestep=timestep,
        n_beads=n_beads,
        drift_per_ns_per_bead=float(drift),
        fluctuation_per_bead=fluctuation,
        drift_kt_per_ns_per_bead=float(drift) / kt(temperature),
        stable=stable,
        times_ps=times,
        total_energies=total,
    )


def _total_energy(state: openmm.State) -> float:
    """Potential plus kinetic energy of ``state``, kJ/mol."""
    energy = state.getPotentialEnergy() + state.getKineticEnergy()
    return energy.value_in_unit(unit.kilojoule_per_mole)
