"""OpenMM reporters of the engine (:mod:`cgkd.simulation.engine`): stability, trajectory, state
data, checkpoint, progress, and a callback that hands each state to a function.

They follow OpenMM's reporter protocol (``describeNextReport``, ``report``), so they go into
``Simulation.reporters`` next to OpenMM's own. Each reports every ``interval`` steps counted
from step ``start``. Reporters that write files can ``resume(step)``: drop what was written
after a checkpoint at ``step`` and append from there. Reporters with ``close()`` are closed
when a run ends.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from tqdm.auto import tqdm

from cgkd.geometry import closest_distance
from cgkd.units import KB_KJ_PER_MOL_K


class UnstableSimulationError(RuntimeError):
    """A run went bad; ``step`` is the first step at which it was seen."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"unstable at step {step}: {reason}")
        self.step = step
        self.reason = reason


class PeriodicReporter:
    """A report every ``interval`` steps counted from step ``start``, asking OpenMM for the
    State parts in ``include`` (``positions``, ``velocities``, ``forces``, ``energy``) with
    positions wrapped into the box when ``periodic`` (None: when the System is periodic)."""

    include: Sequence[str] = ()

    def __init__(self, interval: int, *, start: int = 0, periodic: bool | None = None):
        self.interval = interval
        self.start = start
        self.periodic = periodic

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        steps = self.interval - (simulation.currentStep - self.start) % self.interval
        return {"steps": steps, "periodic": self.periodic, "include": list(self.include)}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        raise NotImplementedError


class StabilityReporter(PeriodicReporter):
    """Checks every ``interval`` steps that the run is sound, else raises UnstableSimulationError.

    Checks, in nm, K and kJ/mol: positions and energy finite; no two particles closer than
    ``min_distance`` (collapse); temperature below ``max_temperature`` (runaway). The
    positions of the last sound frame stay in ``last_good`` ([N, 3] nm, at ``last_good_step``;
    :func:`~cgkd.simulation.engine.run` sets them to the run's start). Put it first in
    ``Simulation.reporters`` so that reporters after it never see a bad frame; with the
    default ``periodic`` it shares the wrapped state of the trajectory reporter.
    """

    include = ("positions", "energy")

    def __init__(
        self,
        interval: int,
        min_distance: float,
        max_temperature: float,
        *,
        start: int = 0,
        periodic: bool | None = None,
    ):
        super().__init__(interval, start=start, periodic=periodic)
        self.min_distance = min_distance
        self.max_temperature = max_temperature
        self.last_good: np.ndarray | None = None
        self.last_good_step = 0

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
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


class CallbackReporter(PeriodicReporter):
    """Hands the State (with the parts in ``include``) to ``callback(simulation, state)`` every
    ``interval`` steps: how a run records frames, energies or volumes."""

    def __init__(
        self,
        interval: int,
        callback: Callable[[app.Simulation, openmm.State], Any],
        include: Sequence[str] = (),
        *,
        start: int = 0,
        periodic: bool | None = None,
    ):
        super().__init__(interval, start=start, periodic=periodic)
        self.callback = callback
        self.include = tuple(include)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self.callback(simulation, state)


class TrajectoryReporter(PeriodicReporter):
    """Writes a DCD frame (positions and box, molecules kept whole) every ``interval`` steps and
    flushes it, so that a killed run loses no frame written before its last checkpoint."""

    include = ("positions",)

    def __init__(self, path: Path, interval: int):
        super().__init__(interval)
        self.path = Path(path)
        self.append = False
        self._file: BinaryIO | None = None
        self._dcd: app.DCDFile | None = None

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
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

    def resume(self, step: int) -> None:
        """Keep the frames up to ``step`` and append after them."""
        n_frames = step // self.interval
        kept = truncate_dcd(self.path, n_frames)
        if kept < n_frames:
            raise RuntimeError(
                f"{self.path} holds {kept} frames, fewer than the {n_frames} its checkpoint "
                f"needs; delete {self.path.parent} to start the run afresh"
            )
        self.append = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def truncate_dcd(path: Path, n_frames: int) -> int:
    """Keep at most the first ``n_frames`` complete frames of an OpenMM-written DCD file
    (header updated); returns the number of frames kept."""
    with open(path, "r+b") as handle:
        header = handle.read(276)
        count, first_step, interval = struct.unpack_from("<3i", header, 8)
        (box_flag,) = struct.unpack_from("<i", header, 48)
        (comment_bytes,) = struct.unpack_from("<i", header, 92)
        (n_atoms,) = struct.unpack_from("<i", header, 104 + comment_bytes)
        start = 112 + comment_bytes  # the atom-count record ends the header
        frame = (56 if box_flag else 0) + 3 * (8 + 4 * n_atoms)
        complete = (handle.seek(0, os.SEEK_END) - start) // frame
        keep = min(count, complete, n_frames)
        handle.truncate(start + keep * frame)
        handle.seek(8)
        handle.write(struct.pack("<i", keep))
        handle.seek(20)
        handle.write(struct.pack("<i", first_step + max(keep - 1, 0) * interval))
    return keep


class StateReporter(PeriodicReporter):
    """A CSV row every ``interval`` steps: step, time (ps), potential, kinetic and total energy
    (kJ/mol), temperature (K) and speed (ns/day); OpenMM's StateDataReporter, opened at the
    first report."""

    def __init__(self, path: Path, interval: int):
        super().__init__(interval)
        self.path = Path(path)
        self.append = False
        self._file: IO[str] | None = None
        self._csv: app.StateDataReporter | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        if self._csv is None:
            self._file = open(self.path, "a" if self.append else "w")  # noqa: SIM115
            self._csv = app.StateDataReporter(
                self._file,
                self.interval,
                step=True,
                time=True,
                potentialEnergy=True,
                kineticEnergy=True,
                totalEnergy=True,
                temperature=True,
                speed=True,
                separator=",",
                append=self.append,
            )
        return self._csv.describeNextReport(simulation)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._csv.report(simulation, state)

    def resume(self, step: int) -> None:
        """Keep the rows up to ``step`` and append after them."""
        lines = self.path.read_text().splitlines(keepends=True)
        self.path.write_text("".join(lines[: step // self.interval + 1]))  # header + rows
        self.append = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class CheckpointReporter(PeriodicReporter):
    """Writes an OpenMM checkpoint every ``interval`` steps, atomically (a kill mid-write
    leaves the previous one)."""

    def __init__(self, path: Path, interval: int):
        super().__init__(interval)
        self.path = Path(path)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        simulation.saveCheckpoint(str(temporary))
        os.replace(temporary, self.path)


class ProgressReporter(PeriodicReporter):
    """A tqdm progress bar over the steps of a run (``total`` steps, from the step it first
    sees), advanced every ``interval`` steps; ``enabled=False`` shows nothing."""

    def __init__(
        self, interval: int, total: int, description: str = "CG MD", *, enabled: bool = True
    ):
        super().__init__(interval)
        self.total, self.description, self.enabled = total, description, enabled
        self.bar: tqdm | None = None

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        if self.bar is None:
            self.bar = tqdm(
                total=self.total,
                initial=simulation.currentStep,
                desc=self.description,
                unit="step",
                disable=not self.enabled,
            )
        return super().describeNextReport(simulation)

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self.bar.update(simulation.currentStep - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
