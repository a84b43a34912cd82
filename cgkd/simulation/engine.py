"""The one OpenMM engine: every MD run in cgkd (all-atom generation, teacher sampling, CG MD,
the NVE drift check, force timings, OpenMM labels) is built and driven here.

- :func:`select_platform`: the platform (``auto``: CUDA when OpenMM has it, else CPU) and
  its properties (threads on the CPU platform; deterministic forces on request);
  :func:`ran_on`: the platform and thread count a Simulation got.
- :func:`make_integrator`: Langevin middle (NVT; one friction, or one per bead type),
  dissipative particle dynamics (NVT, momentum conserving; one friction per pair of types),
  Nose-Hoover (NVT) or velocity Verlet (NVE).
- :func:`create_simulation` / :func:`model_simulation`: an ``openmm.app.Simulation`` of an
  OpenMM System, or of an exported model file (TorchScript, fused, native ``.xml``).
- :func:`start`: positions, box, constraints, minimisation and velocities.
- :func:`run`: steps with pluggable reporters (:mod:`cgkd.simulation.reporters`); a run that
  goes bad stops and says where, it does not raise.
- :func:`resume`: continue from a checkpoint, reporters' files cut back to it.

Seeds are cgkd seeds (0 or more), turned into OpenMM's by :func:`openmm_seed`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# isort: off
from cgkd.simulation.system import bead_topology, build_system, openmm_seed  # before openmm
import openmm
import openmm.app as app
import openmm.unit as unit
# isort: on

from cgkd.simulation.reporters import StabilityReporter, UnstableSimulationError
from cgkd.simulation.thermostats import (
    dpd,
    pair_frictions,
    per_particle_brownian,
    per_particle_langevin,
)

#: Platforms tried in order by ``platform="auto"``.
AUTO_PLATFORMS = ("CUDA", "CPU")
#: Integrators of :func:`make_integrator`.
INTEGRATORS = ("langevin", "brownian", "dpd", "nose_hoover", "verlet")


def select_platform(
    name: str = "auto", threads: int | None = None, *, deterministic: bool = False
) -> tuple[openmm.Platform, dict[str, str]]:
    """The OpenMM platform ``name`` (``auto``: CUDA when OpenMM has it, else CPU) and its
    properties: ``threads`` on a platform with threads (the CPU one; ignored elsewhere, so a
    run's thread count can always be passed), and deterministic forces if ``deterministic``
    and the platform offers them."""
    available = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    if name == "auto":
        name = next(p for p in AUTO_PLATFORMS if p in available)
    elif name not in available:
        raise ValueError(
            f"OpenMM platform '{name}' is not available here; use one of {available} or auto"
        )
    platform = openmm.Platform.getPlatformByName(name)
    supported = platform.getPropertyNames()
    properties = {}
    if deterministic and "DeterministicForces" in supported:
        properties["DeterministicForces"] = "true"
    if threads and "Threads" in supported:
        properties["Threads"] = str(threads)
    return platform, properties


def ran_on(simulation: app.Simulation) -> dict[str, Any]:
    """The platform ``simulation`` runs on (``platform``) and, on a platform with threads,
    their count (``threads``; None elsewhere): what a speed or a bitwise repeat depends on."""
    platform = simulation.context.getPlatform()
    threads = None
    if "Threads" in platform.getPropertyNames():
        threads = int(platform.getPropertyValue(simulation.context, "Threads"))
    return {"platform": platform.getName(), "threads": threads}


def make_integrator(
    kind: str,
    timestep: float,
    *,
    temperature: float = 300.0,
    friction: float = 1.0,
    seed: int = 0,
    types: np.ndarray | None = None,
    type_frictions: np.ndarray | None = None,
    dpd_cutoff: float = 0.6,
) -> openmm.Integrator:
    """The integrator ``kind`` (:data:`INTEGRATORS`) with ``timestep`` ps: ``langevin``
    (Langevin middle at ``temperature`` K, ``friction`` 1/ps, random numbers from ``seed``;
    with ``type_frictions`` [T] and the particles' ``types`` [N], one friction per type),
    ``brownian`` (overdamped Langevin with the same frictions; needs ``types``),
    ``dpd`` (dissipative particle dynamics within ``dpd_cutoff`` nm, pair friction the mean of
    the two types' frictions, ``friction`` for all without ``type_frictions``),
    ``nose_hoover`` (``friction`` is the thermostat's collision frequency, 1/ps) or
    ``verlet`` (NVE)."""
    step = timestep * unit.picosecond
    if kind in ("langevin", "brownian", "dpd") and (
        type_frictions is not None or kind != "langevin"
    ):
        if types is None:
            raise ValueError(f"integrator '{kind}' with frictions per type needs the types")
        n_types = int(np.max(types)) + 1
        per_type = np.full(n_types, friction) if type_frictions is None else type_frictions
        if kind == "dpd":
            pairs = pair_frictions(per_type)
            return dpd(temperature, pairs, dpd_cutoff, timestep, types, seed)
        frictions = np.asarray(per_type, dtype=float)[np.asarray(types, dtype=int)]
        thermostat = per_particle_brownian if kind == "brownian" else per_particle_langevin
        return thermostat(temperature, frictions, timestep, seed)
    if kind == "langevin":
        integrator = openmm.LangevinMiddleIntegrator(
            temperature * unit.kelvin, friction / unit.picosecond, step
        )
        integrator.setRandomNumberSeed(openmm_seed(seed))
        return integrator
    if kind == "nose_hoover":
        return openmm.NoseHooverIntegrator(
            temperature * unit.kelvin, friction / unit.picosecond, step
        )
    if kind == "verlet":
        return openmm.VerletIntegrator(step)
    raise ValueError(f"integrator '{kind}' is unknown; use one of {INTEGRATORS}")


def create_simulation(
    system: openmm.System,
    integrator: openmm.Integrator,
    *,
    topology: app.Topology | None = None,
    platform: str = "auto",
    threads: int | None = None,
    deterministic: bool = False,
) -> app.Simulation:
    """A Simulation of ``system`` on the platform of :func:`select_platform` (no positions
    yet). Without ``topology``, one of one-particle residues in the System's default box."""
    if topology is None:
        box = system.getDefaultPeriodicBoxVectors()
        vectors = np.array([v.value_in_unit(unit.nanometer) for v in box])
        topology = bead_topology(system.getNumParticles(), vectors)
    chosen, properties = select_platform(platform, threads, deterministic=deterministic)
    return app.Simulation(topology, system, integrator, chosen, properties)


def model_simulation(
    model_path: str | Path,
    masses: np.ndarray,
    box: np.ndarray,
    integrator: openmm.Integrator,
    *,
    platform: str = "auto",
    threads: int | None = None,
    bead_names: list[str] | None = None,
    bonds: np.ndarray | None = None,
) -> app.Simulation:
    """A Simulation of the exported model at ``model_path`` (TorchScript, fused or native
    ``.xml``; :func:`~cgkd.simulation.system.build_system`) for beads of ``masses`` (amu) in
    ``box`` [3, 3] (nm). ``bonds`` [K, 2] become topology bonds, so that trajectory writers
    keep molecules whole."""
    topology = bead_topology(len(masses), box, bead_names)
    atoms = list(topology.atoms())
    for i, j in np.asarray(bonds if bonds is not None else np.zeros((0, 2)), dtype=int):
        topology.addBond(atoms[i], atoms[j])
    system = build_system(str(model_path), masses, box)
    return create_simulation(
        system, integrator, topology=topology, platform=platform, threads=threads
    )


def start(
    simulation: app.Simulation,
    positions: Any,
    *,
    box: np.ndarray | None = None,
    velocities: Any = None,
    constraint_tolerance: float | None = None,
    minimize: tuple[float, int] | None = None,
    temperature: float | None = None,
    seed: int = 0,
) -> None:
    """Put ``simulation`` at ``positions`` (nm) in ``box`` ([3, 3] nm; None: as it is), virtual
    sites placed; then, as asked, apply constraints (relative ``constraint_tolerance``),
    minimise (``(tolerance kJ/mol/nm, max iterations)``), and set ``velocities`` (nm/ps) or
    draw them at ``temperature`` K from ``seed``."""
    context = simulation.context
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box)])
    context.setPositions(positions if unit.is_quantity(positions) else np.asarray(positions))
    context.computeVirtualSites()
    if constraint_tolerance is not None:
        context.applyConstraints(constraint_tolerance)
    if minimize is not None:
        tolerance, max_iterations = minimize
        openmm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations)
    if velocities is not None:
        context.setVelocities(velocities)
    elif temperature is not None:
        context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))


@dataclass
class RunOutcome:
    """How a :func:`run` ended: ``error`` is None when it completed; ``last_good_step`` is the
    step of its last sound frame (its last step if it completed); ``elapsed`` in s."""

    error: Exception | None
    last_good_step: int
    start_step: int
    elapsed: float

    @property
    def stable(self) -> bool:
        """Whether the run completed."""
        return self.error is None

    @property
    def failed_step(self) -> int:
        """The step at which the failure was seen (the last good one for an OpenMM error)."""
        return getattr(self.error, "step", self.last_good_step)

    @property
    def message(self) -> str:
        """``completed``, or one line saying what went wrong and when."""
        if self.error is None:
            return "completed"
        if isinstance(self.error, UnstableSimulationError):
            return str(self.error)
        return f"OpenMM failed after step {self.last_good_step}: {self.error}".splitlines()[0]


def run(simulation: app.Simulation, steps: int, reporters: Sequence[Any] = ()) -> RunOutcome:
    """Advance ``simulation`` by ``steps`` MD steps with ``reporters`` (OpenMM's protocol, in
    this order). A run that goes bad (:class:`UnstableSimulationError` from a
    :class:`StabilityReporter`, or an OpenMM error) stops there and says so in the outcome.
    Reporters with ``close()`` are closed at the end."""
    start_step = simulation.currentStep
    monitors = [r for r in reporters if isinstance(r, StabilityReporter)]
    if monitors:
        state = simulation.context.getState(getPositions=True)
        current = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        for monitor in monitors:
            monitor.last_good = np.asarray(current)
            monitor.last_good_step = start_step
    simulation.reporters = list(reporters)
    error: Exception | None = None
    begin = time.perf_counter()
    try:
        simulation.step(steps)
    except (UnstableSimulationError, openmm.OpenMMException, ValueError) as caught:
        error = caught
    finally:
        elapsed = time.perf_counter() - begin
        simulation.reporters = []
        for reporter in reporters:
            if hasattr(reporter, "close"):
                reporter.close()
    if error is None:
        last_good = simulation.currentStep
    else:
        last_good = monitors[0].last_good_step if monitors else start_step
    return RunOutcome(error, last_good, start_step, elapsed)


def resume(simulation: app.Simulation, checkpoint: Path, reporters: Sequence[Any]) -> bool:
    """Continue ``simulation`` from ``checkpoint`` if the file exists: load it and cut the
    files of ``reporters`` (those with ``resume``) back to its step. Returns whether it did."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return False
    simulation.loadCheckpoint(str(checkpoint))
    for reporter in reporters:
        if hasattr(reporter, "resume"):
            reporter.resume(simulation.currentStep)
    return True
