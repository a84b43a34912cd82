"""OpenMM reporters for CG MD: a stability monitor, an atomic checkpoint and a progress bar.

They follow OpenMM's reporter protocol (``describeNextReport``, ``report``), so they go into
``Simulation.reporters`` next to OpenMM's own DCD and state-data reporters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import openmm.app as app
import openmm.unit as unit
from tqdm.auto import tqdm

from cgkd.geometry import closest_distance
from cgkd.units import KB_KJ_PER_MOL_K


class UnstableSimulationError(RuntimeError):
    """A CG run went bad; ``step`` is the first step at which it was seen."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"unstable at step {step}: {reason}")
        self.step = step
        self.reason = reason


class StabilityReporter:
    """Checks every ``interval`` steps that the run is sound, else raises UnstableSimulationError.

    Checks, in nm, K and kJ/mol: positions and energy finite; no two beads closer than
    ``min_distance`` (collapse); temperature below ``max_temperature`` (runaway). The
    positions of the last sound frame stay in ``last_good`` ([N, 3] nm, with ``last_good_step``).
    Put it first in ``Simulation.reporters`` so that reporters after it never see a bad frame.
    """

    def __init__(self, interval: int, min_distance: float, max_temperature: float):
        self.interval = interval
        self.min_distance = min_distance
        self.max_temperature = max_temperature
        self.last_good: np.ndarray | None = None
        self.last_good_step = 0

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        steps = self.interval - simulation.currentStep % self.interval
        # periodic=None: the same (wrapped) group as the DCD reporter, so this one runs first.
        return {"steps": steps, "periodic": None, "include": ["positions", "energy"]}

    def report(self, simulation: app.Simulation, state) -> None:
        """Raise UnstableSimulationError if the frame in ``state`` is not sound."""
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        reason = self.check(positions, box, potential, kinetic)
        if reason:
            raise UnstableSimulationError(simulation.currentStep, reason)
        self.last_good = np.array(positions)
        self.last_good_step = simulation.currentStep

    def check(
        self, positions: np.ndarray, box: np.ndarray, potential: float, kinetic: float
    ) -> str:
        """Empty if the frame is sound, else what is wrong with it."""
        if not (np.isfinite(positions).all() and np.isfinite(potential) and np.isfinite(kinetic)):
            return "positions or energy became NaN/Inf"
        closest = closest_distance(positions, box, self.min_distance)
        if closest < self.min_distance:
            return (
                f"beads collapsed (closest pair {closest:.3f} nm < "
                f"min_distance {self.min_distance} nm)"
            )
        temperature = 2.0 * kinetic / (3 * len(positions) * KB_KJ_PER_MOL_K)
        if temperature > self.max_temperature:
            return (
                f"temperature ran away to {temperature:.0f} K (limit {self.max_temperature:.0f} K)"
            )
        return ""


class TrajectoryReporter:
    """Writes a DCD frame (positions and box, molecules kept whole) every ``interval`` steps and
    flushes it, so that a killed run loses no frame written before its last checkpoint."""

    def __init__(self, path: Path, interval: int, append: bool = False):
        self.path = Path(path)
        self.interval = interval
        self.append = append
        self._file: BinaryIO | None = None
        self._dcd: app.DCDFile | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["positions"]}

    def report(self, simulation: app.Simulation, state) -> None:
        if self._dcd is None:
            self._file = open(self.path, "r+b" if self.append else "wb")  # noqa: SIM115
            step = simulation.integrator.getStepSize()
            self._dcd = app.DCDFile(
                self._file, simulation.topology, step, self.interval, self.interval, self.append
            )
        self._dcd.writeModel(
            state.getPositions(asNumpy=True), periodicBoxVectors=state.getPeriodicBoxVectors()
        )
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class CheckpointReporter:
    """Writes an OpenMM checkpoint every ``interval`` steps, atomically (a kill mid-write
    leaves the previous one)."""

    def __init__(self, path: Path, interval: int):
        self.path = Path(path)
        self.interval = interval

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation: app.Simulation, state) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        simulation.saveCheckpoint(str(temporary))
        os.replace(temporary, self.path)


class ProgressReporter:
    """A tqdm progress bar over the steps of a run, advanced every ``interval`` steps."""

    def __init__(self, interval: int, total: int, initial: int = 0, description: str = "CG MD"):
        self.interval = interval
        self.bar = tqdm(total=total, initial=initial, desc=description, unit="step")

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation: app.Simulation, state) -> None:
        self.bar.update(simulation.currentStep - self.bar.n)

    def close(self) -> None:
        self.bar.close()
