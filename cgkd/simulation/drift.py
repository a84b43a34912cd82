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
from cgkd.simulation.system import build_system, openmm_seed, select_platform  # before openmm
import openmm
import openmm.unit as unit
# isort: on

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
    system = build_system(model_path, masses, box)
    chosen, properties = select_platform(platform)
    thermostat = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, 1.0 / unit.picosecond, equilibration_timestep * unit.picosecond
    )
    thermostat.setRandomNumberSeed(openmm_seed(seed))
    context = openmm.Context(system, thermostat, chosen, properties)
    context.setPositions(np.asarray(positions))
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
    thermostat.step(equilibration_steps)
    state = context.getState(getPositions=True, getVelocities=True)
    del context

    verlet = openmm.VerletIntegrator(timestep * unit.picosecond)
    context = openmm.Context(system, verlet, chosen, properties)
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    energies = []
    n_reports = steps // report_interval
    for _ in range(n_reports + 1):
        energy_state = context.getState(getEnergy=True)
        energies.append(
            (energy_state.getPotentialEnergy() + energy_state.getKineticEnergy()).value_in_unit(
                unit.kilojoule_per_mole
            )
        )
        if len(energies) <= n_reports:
            verlet.step(report_interval)
    total = np.asarray(energies)
    times = np.arange(len(total)) * report_interval * timestep
    n_beads = len(masses)
    stable = bool(np.isfinite(total).all())
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
