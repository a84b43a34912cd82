"""Teacher-sampled configurations: short Langevin runs of any OpenMM System (a teacher
model as a TorchForce, or an all-atom force field such as AMOEBA) at several temperatures,
started from reference frames, saving positions and boxes.

The frames become the soft targets of two-stage distillation once the teacher labels them;
the hotter runs reach the higher-energy configurations that the reference data lack. Every
saved frame passes the check of CG MD's ``StabilityReporter`` (finite, no pair closer than
``min_distance``, temperature below ``max_temperature_factor`` times the run's). A run that
goes bad, or that OpenMM stops (NaN coordinates), ends there; its good frames are kept and
the failure is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# isort: off
from cgkd.simulation.engine import (  # before openmm
    RunOutcome,
    create_simulation,
    make_integrator,
    run,
    start,
)
import openmm
import openmm.app as app
import openmm.unit as unit
# isort: on

from tqdm.auto import tqdm

from cgkd.simulation.reporters import CallbackReporter, StabilityReporter


@dataclass(frozen=True)
class SamplerSettings:
    """Teacher MD for soft targets. Units: K (via factors of ``temperature``), ps, 1/ps, nm.

    ``starts`` runs per temperature, each from its own reference frame, each ``steps`` long
    after ``equilibration`` unsaved steps, saving every ``save_interval`` steps. A run ends
    when two particles come closer than ``min_distance`` (nm) or the temperature exceeds
    ``max_temperature_factor`` times its own (the frames so far are kept). The schema of the
    ``sampler`` config section.
    """

    temperature: float = 300.0
    temperature_factors: tuple[float, ...] = (1.0, 1.15, 1.3)
    starts: int = 2
    steps: int = 1000
    equilibration: int = 200
    save_interval: int = 20
    timestep: float = 0.005
    friction: float = 1.0
    min_distance: float = 0.05
    max_temperature_factor: float = 2.0
    platform: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "starts", "steps", "save_interval", "timestep", "friction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sampler.{name} must be positive, got {getattr(self, name)}")
        if not self.temperature_factors or min(self.temperature_factors) <= 0:
            raise ValueError(
                f"sampler.temperature_factors={list(self.temperature_factors)} must be a "
                "non-empty list of positive factors of the temperature, e.g. [1.0, 1.2, 1.4]"
            )
        if self.equilibration < 0:
            raise ValueError(f"sampler.equilibration must be >= 0 steps, got {self.equilibration}")

    @property
    def temperatures(self) -> list[float]:
        """The temperatures sampled, K."""
        return [self.temperature * factor for factor in self.temperature_factors]

    @property
    def frames_per_run(self) -> int:
        """Frames saved by a run that stays good."""
        return self.steps // self.save_interval


@dataclass
class SampledFrames:
    """Frames from teacher MD: positions [T, N, 3] and boxes [T, 3, 3] in nm, the temperature
    (K) and run index of each frame, and one line per run that stopped early."""

    positions: np.ndarray
    boxes: np.ndarray
    temperatures: np.ndarray
    runs: np.ndarray
    failures: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.positions)


def sample_md(
    system: openmm.System,
    positions: np.ndarray,
    boxes: np.ndarray,
    settings: SamplerSettings,
    *,
    seed: int = 0,
    progress: bool = True,
) -> SampledFrames:
    """Run ``settings.starts`` runs at every temperature of ``settings``, run ``k`` from
    ``positions[k % len(positions)]`` in ``boxes[k % ...]`` (nm), and collect their frames.

    The System is used as is (its own constraints, virtual sites and forces); masses come
    from it. Seeds: run ``k`` uses ``seed + k`` for velocities and the thermostat.
    """
    if len(positions) == 0:
        raise ValueError("sample_md needs at least one starting frame")
    frames: list[tuple[np.ndarray, np.ndarray, float, int]] = []
    failures: list[str] = []
    plan = [(t, k) for t in settings.temperatures for k in range(settings.starts)]
    run_steps = settings.equilibration + settings.frames_per_run * settings.save_interval
    bar = tqdm(total=len(plan) * run_steps, desc="teacher MD", unit="step", disable=not progress)
    for index, (temperature, first) in enumerate(plan):
        frame = first % len(positions)
        kept, outcome = _sample_run(
            system, positions[frame], boxes[frame], temperature, settings, seed + index
        )
        frames += [(x, box, temperature, index) for x, box in kept]
        if not outcome.stable:
            reason = str(outcome.error).splitlines()[0]
            failures.append(
                f"run {index} at {temperature:.1f} K, step {outcome.failed_step}: {reason}"
            )
        bar.update(run_steps)
    bar.close()
    if not frames:
        raise RuntimeError(
            "teacher MD kept no frame: " + "; ".join(failures) + "; lower the sampler's "
            "temperature_factors or timestep"
        )
    x, box, temperatures, runs = zip(*frames, strict=True)
    return SampledFrames(
        positions=np.stack(x),
        boxes=np.stack(box),
        temperatures=np.asarray(temperatures, dtype=float),
        runs=np.asarray(runs, dtype=int),
        failures=failures,
    )


def _sample_run(
    system: openmm.System,
    positions: np.ndarray,
    box: np.ndarray,
    temperature: float,
    settings: SamplerSettings,
    seed: int,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], RunOutcome]:
    """One teacher MD run at ``temperature`` K from ``positions`` in ``box`` (nm): the
    (positions, box) of every frame it kept, unwrapped, and how it ended."""
    integrator = make_integrator(
        "langevin",
        settings.timestep,
        temperature=temperature,
        friction=settings.friction,
        seed=seed,
    )
    simulation = create_simulation(
        system, integrator, platform=settings.platform, threads=settings.threads
    )
    start(
        simulation,
        positions,
        box=box,
        constraint_tolerance=1e-6,
        temperature=temperature,
        seed=seed,
    )
    kept: list[tuple[np.ndarray, np.ndarray]] = []

    def keep(simulation: app.Simulation, state: openmm.State) -> None:
        kept.append(
            (
                np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
                np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)),
            )
        )

    outcome = run(simulation, settings.equilibration)
    if outcome.stable:
        every = {"start": settings.equilibration, "periodic": False}  # as the frames are kept
        monitor = StabilityReporter(
            settings.save_interval,
            settings.min_distance,
            settings.max_temperature_factor * temperature,
            **every,
        )
        recorder = CallbackReporter(settings.save_interval, keep, ("positions",), **every)
        steps = settings.frames_per_run * settings.save_interval
        outcome = run(simulation, steps, [monitor, recorder])
    return kept, outcome
