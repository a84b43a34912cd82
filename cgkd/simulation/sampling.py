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
from cgkd.simulation.system import openmm_seed, select_platform  # before openmm
import openmm
import openmm.unit as unit
# isort: on

from tqdm.auto import tqdm

from cgkd.simulation.reporters import StabilityReporter, UnstableSimulationError


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
    platform, properties = select_platform(settings.platform, settings.threads)
    collected: dict[str, list[np.ndarray]] = {"positions": [], "boxes": [], "t": [], "runs": []}
    failures: list[str] = []
    plan = [(t, k) for t in settings.temperatures for k in range(settings.starts)]
    run_steps = settings.equilibration + settings.frames_per_run * settings.save_interval
    bar = tqdm(total=len(plan) * run_steps, desc="teacher MD", unit="step", disable=not progress)
    for run, (temperature, start) in enumerate(plan):
        integrator = openmm.LangevinMiddleIntegrator(
            temperature * unit.kelvin, settings.friction / unit.picosecond, settings.timestep
        )
        integrator.setRandomNumberSeed(openmm_seed(seed + run))
        context = openmm.Context(system, integrator, platform, properties)
        frame = start % len(positions)
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in boxes[frame]])
        context.setPositions(np.asarray(positions[frame]))
        context.applyConstraints(1e-6)
        context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed + run))
        monitor = StabilityReporter(
            settings.save_interval,
            settings.min_distance,
            settings.max_temperature_factor * temperature,
        )
        done = 0
        try:
            integrator.step(settings.equilibration)
            done += settings.equilibration
            for _ in range(settings.frames_per_run):
                integrator.step(settings.save_interval)
                done += settings.save_interval
                state = context.getState(getPositions=True, getEnergy=True)
                x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
                problem = monitor.check(
                    x,
                    box,
                    state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole),
                )
                if problem:
                    raise UnstableSimulationError(done, problem)
                collected["positions"].append(np.asarray(x))
                collected["boxes"].append(np.asarray(box))
                collected["t"].append(temperature)
                collected["runs"].append(run)
        except (UnstableSimulationError, openmm.OpenMMException) as error:
            reason = str(error).splitlines()[0]
            failures.append(f"run {run} at {temperature:.1f} K, step {done}: {reason}")
        bar.update(run_steps)
        del context, integrator
    bar.close()
    if not collected["positions"]:
        raise RuntimeError(
            "teacher MD kept no frame: " + "; ".join(failures) + "; lower the sampler's "
            "temperature_factors or timestep"
        )
    return SampledFrames(
        positions=np.stack(collected["positions"]),
        boxes=np.stack(collected["boxes"]),
        temperatures=np.asarray(collected["t"], dtype=float),
        runs=np.asarray(collected["runs"], dtype=int),
        failures=failures,
    )
