"""Persistent CG MD walkers of a model that changes between calls: the sampler of
relative-entropy refinement (:mod:`cgkd.training.relative_entropy`).

Each call asks for the model file as it is now (``model()``, which exports it), builds one
OpenMM Simulation per walker through the engine, carries each walker on from where the last call
left it (positions and velocities) and returns the frames saved on the way. The first call
minimises the walkers and runs their equilibration first. A walker that goes bad raises:
the model being refined has left the region where it is sound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# isort: off
from cgkd.simulation.engine import RunOutcome, run, start  # before openmm
import openmm
import openmm.app as app
import openmm.unit as unit
# isort: on

from cgkd.simulation.md import MDSettings, cg_simulation
from cgkd.simulation.reporters import CallbackReporter, StabilityReporter


class Walkers:
    """``len(positions)`` CG MD runs from ``positions`` [W, N, 3] in ``boxes`` [W, 3, 3]
    (nm) of beads of ``masses`` (amu) with the integrator, temperature, time step and
    stability limits of ``settings``, each call running every walker ``steps`` further and
    saving a frame every ``save_interval`` steps (the first call minimises and runs
    ``equilibration`` unsaved steps first). Call ``k`` seeds walker ``w``'s thermostat with
    ``seed + 1000 k + w``. ``model()`` writes the model as it is now and returns its file."""

    def __init__(
        self,
        model: Callable[[], Path],
        positions: np.ndarray,
        boxes: np.ndarray,
        masses: np.ndarray,
        settings: MDSettings,
        *,
        steps: int,
        save_interval: int,
        equilibration: int = 0,
        seed: int = 0,
        bead_names: list[str] | None = None,
    ) -> None:
        self.model, self.masses, self.bead_names = model, masses, bead_names
        self.settings = replace(settings, seed=seed)
        self.steps, self.save_interval, self.equilibration = steps, save_interval, equilibration
        self.positions = np.asarray(positions, dtype=float).copy()
        self.boxes = np.asarray(boxes, dtype=float).copy()
        self.velocities: np.ndarray | None = None
        self.calls = 0

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        """Run every walker ``steps`` further with the model file as it is now: the frames
        saved, positions [F, N, 3] and boxes [F, 3, 3] (nm), walker by walker."""
        frames: list[np.ndarray] = []
        velocities = []
        path = self.model()
        for walker in range(len(self.positions)):
            kept, last, moving = self._advance(path, walker)
            frames += kept
            self.positions[walker] = last
            velocities.append(moving)
        self.velocities = np.stack(velocities)
        self.calls += 1
        boxes = np.repeat(self.boxes, len(frames) // len(self.boxes), axis=0)
        return np.stack(frames), boxes

    def _advance(self, path: Path, walker: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        settings, box = self.settings, self.boxes[walker]
        seed = settings.seed + 1000 * self.calls + walker
        simulation = cg_simulation(
            path, self.masses, box, settings, seed=seed, bead_names=self.bead_names
        )
        first = self.velocities is None
        start(
            simulation,
            self.positions[walker],
            box=box,
            velocities=None if first else self.velocities[walker],
            minimize=(10.0, 1000) if first and settings.minimize else None,
            temperature=settings.temperature if first else None,
            seed=seed,
        )
        if first and self.equilibration:
            self._check(path, walker, run(simulation, self.equilibration, [self._monitor()]))
        kept: list[np.ndarray] = []

        def keep(simulation: app.Simulation, state: openmm.State) -> None:
            kept.append(np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))

        recorder = CallbackReporter(self.save_interval, keep, ("positions",), periodic=False)
        self._check(path, walker, run(simulation, self.steps, [self._monitor(), recorder]))
        state = simulation.context.getState(getPositions=True, getVelocities=True)
        return (
            kept,
            state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
        )

    def _monitor(self) -> StabilityReporter:
        settings = self.settings
        limit = settings.max_temperature_factor * settings.temperature
        return StabilityReporter(self.save_interval, settings.min_distance, limit, periodic=False)

    def _check(self, path: Path, walker: int, outcome: RunOutcome) -> None:
        if not outcome.stable:
            raise RuntimeError(
                f"CG MD of walker {walker} went bad in call {self.calls} of {path}: "
                f"{outcome.message}; lower the learning rate of the refinement"
            )

    def state_dict(self) -> dict[str, Any]:
        """Where the walkers are: positions, velocities (None before the first call), calls."""
        velocities = None if self.velocities is None else self.velocities.copy()
        return {"positions": self.positions.copy(), "velocities": velocities, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the walkers where :meth:`state_dict` said they were."""
        self.positions = np.asarray(state["positions"], dtype=float).copy()
        velocities = state["velocities"]
        self.velocities = None if velocities is None else np.asarray(velocities, dtype=float)
        self.calls = int(state["calls"])
