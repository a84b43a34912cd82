"""Dense segments: MD that keeps positions and velocities every few femtoseconds, for the
velocity autocorrelation (VACF). The pipeline's trajectories (a frame every
``report_interval`` steps, no velocities) are too sparse for it. Units: nm, ps, nm/ps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

# isort: off
from cgkd.simulation.engine import run  # before openmm
import openmm
from openmm import app, unit
# isort: on

from cgkd.io.atomic import atomic_path
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.reporters import CallbackReporter

#: ps between the frames of a dense segment, and of the equilibration before it (ps) that
#: forgets the velocities drawn at its start.
SPACING = 0.01
EQUILIBRATION = 2.0

#: Maps a state's [particles, 3] array to the beads' [beads, 3].
Select = Callable[[np.ndarray], np.ndarray]


def record_dense(
    simulation: app.Simulation,
    timestep: float,
    picoseconds: float,
    select: Select | None = None,
    *,
    spacing: float = SPACING,
    equilibration: float = EQUILIBRATION,
    name: str = "dense segment",
    types: np.ndarray | None = None,
    type_names: list[str] | None = None,
) -> Trajectory:
    """Run ``equilibration`` ps, then ``picoseconds`` ps (``timestep`` ps a step) keeping the
    positions (unwrapped), velocities and box every ``spacing`` ps; ``select`` maps each
    [particles, 3] array to the beads' (None: every particle is a bead). A run that goes bad
    is a RuntimeError saying where."""
    select = select or (lambda values: values)
    interval = max(1, round(spacing / timestep))
    steps = max(2, round(picoseconds / timestep) // interval) * interval
    outcome = run(simulation, round(equilibration / timestep))
    positions: list[np.ndarray] = []
    velocities: list[np.ndarray] = []
    boxes: list[np.ndarray] = []

    def keep(_simulation: app.Simulation, state: openmm.State) -> None:
        positions.append(select(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
        speed = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        velocities.append(select(speed))
        boxes.append(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))

    if outcome.stable:
        reporter = CallbackReporter(interval, keep, ("positions", "velocities"))
        outcome = run(simulation, steps, [reporter])
    if not outcome.stable:
        raise RuntimeError(f"{name}: {outcome.message}")
    return Trajectory(
        np.array(positions),
        np.array(boxes),
        dt=interval * timestep,
        velocities=np.array(velocities),
        types=types,
        type_names=type_names,
        name=name,
    )


def save_segment(trajectory: Trajectory, path: Path) -> None:
    """Write a dense segment (positions, velocities, boxes, frame spacing, species) to an
    ``.npz`` file, atomically."""
    frames = [trajectory.frame(t) for t in range(len(trajectory))]
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            positions=np.array([f.positions for f in frames]),
            velocities=np.array([f.velocities for f in frames]),
            boxes=np.array([f.box for f in frames]),
            dt=np.float64(trajectory.dt),
            types=trajectory.types,
            type_names=np.array(trajectory.type_names),
        )


def load_segment(path: Path, name: str) -> Trajectory:
    """A dense segment written by :func:`save_segment`."""
    with np.load(path) as data:
        return Trajectory(
            data["positions"],
            data["boxes"],
            dt=float(data["dt"]),
            velocities=data["velocities"],
            types=data["types"],
            type_names=[str(n) for n in data["type_names"]],
            name=name,
        )
