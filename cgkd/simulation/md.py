"""CG molecular dynamics of an exported model in OpenMM (openmmtorch TorchForce), watched,
checkpointed and resumable.

A run is a Simulation of the engine (:mod:`cgkd.simulation.engine`) with reporters, in
this order: the stability monitor (so nothing after it sees a bad frame), the DCD trajectory,
the state data (energies, temperature, speed), an atomic checkpoint and the progress bar, all
at ``report_interval``. A run that finds its checkpoint continues from it, trimming frames
and rows written after it, so a killed run resumes where it stopped. A run that goes bad
stops, writes the last good frame and reports the step; it does not raise, so sweeps can
count stable runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# isort: off
from cgkd.simulation.engine import (  # before openmm
    INTEGRATORS,
    RunOutcome,
    make_integrator,
    model_simulation,
    ran_on,
    resume,
    run,
    select_platform,
    start,
)
import openmm.app as app
import openmm.unit as unit
# isort: on

from cgkd.simulation.export import load_exported
from cgkd.simulation.friction import TARGETS
from cgkd.simulation.reporters import (
    CheckpointReporter,
    ProgressReporter,
    StabilityReporter,
    StateReporter,
    TrajectoryReporter,
)
from cgkd.simulation.thermostats import named_frictions
from cgkd.units import ns_per_day

log = logging.getLogger(__name__)

KERNELS = ("auto", "fused", "plain")
FILES = ("trajectory.dcd", "topology.pdb", "state.csv", "checkpoint.chk", "last_good.pdb")


@dataclass(frozen=True)
class MDSettings:
    """CG MD settings in OpenMM units (K, ps, 1/ps, nm).

    ``integrator``: ``langevin`` (Langevin middle, NVT; ``friction`` is its friction),
    ``nose_hoover`` (NVT; ``friction`` is the thermostat's collision frequency) or
    ``verlet`` (velocity Verlet, NVE). The monitor stops a run when two beads come closer
    than ``min_distance`` or the temperature exceeds ``max_temperature_factor`` times
    ``temperature``. ``platform``: ``auto`` (CUDA when present, else CPU), ``CPU``,
    ``CUDA`` or ``Reference``; ``threads`` for the CPU platform (None: OpenMM's default,
    the run's ``threads``).
    ``replicas`` independent runs differ in seed (``seed + k``) and starting frame.
    ``kernels``: ``auto`` runs a model's fused export (:mod:`cgkd.ops`) where it has one and
    the platform is the CPU, ``fused`` requires it, ``plain`` runs the plain TorchScript.
    ``models``: the models the simulate stage runs (by default the student, the baseline and
    the student refined by relative entropy; also teacher, ensemble, classical).
    ``integrator``: also ``brownian`` (overdamped Langevin, per-type friction, no velocities:
    for liquids slower than Langevin at this timestep can make them) and ``dpd`` (dissipative
    particle dynamics: momentum conserving, pair friction within ``dpd_cutoff`` nm).
    ``frictions``: a friction (1/ps) per bead type name for ``langevin`` and ``dpd`` (the types
    not named keep ``friction``; a DPD pair gets the mean of its two types'). ``friction:
    matched`` fits one friction per bead type so that each type's diffusion coefficient matches
    the reference's (:mod:`cgkd.simulation.friction`): ``calibration_steps`` steps of CG MD at
    each of ``calibration_frictions`` (1/ps; None: 1, 10 and 30, or 100, 300 and 1000 for
    Brownian dynamics, whose Euler steps need a large friction) first, then
    ``calibration_refinements`` runs at the frictions fitted so far, each refitting every type's
    friction through the two runs nearest its target (secant steps). ``calibration_target``:
    what is matched (:data:`~cgkd.simulation.friction.TARGETS`): ``msd`` the diffusion
    coefficient from the MSD over the analysis's lag window; ``vacf`` the Green-Kubo D (the VACF
    integrated to ``vacf_max_lag`` ps) or ``vacf_decay`` the time the normalised VACF takes to
    fall to 1/e, both from dense segments (a frame every 10 fs, with velocities) of
    ``calibration_steps`` steps: AA MD of the built-in system and the CG calibration runs. The
    schema of the ``simulate`` config section; ``seed`` is set by the code.
    """

    integrator: str = "langevin"
    temperature: float = 300.0
    timestep: float = 0.005
    friction: float | str = 1.0
    steps: int = 10000
    report_interval: int = 100
    minimize: bool = True
    seed: int = 0
    platform: str = "auto"
    threads: int | None = None
    min_distance: float = 0.12
    max_temperature_factor: float = 3.0
    replicas: int = 1
    kernels: str = "auto"
    models: tuple[str, ...] = ("student", "baseline", "refined")
    frictions: dict[str, float] | None = None
    dpd_cutoff: float = 0.6
    calibration_frictions: tuple[float, ...] | None = None
    calibration_steps: int = 4000
    calibration_refinements: int = 2
    calibration_target: str = "msd"
    vacf_max_lag: float = 1.0

    def __post_init__(self) -> None:
        if self.integrator not in INTEGRATORS:
            raise ValueError(
                f"simulate.integrator '{self.integrator}' is unknown; use one of {INTEGRATORS}"
            )
        if isinstance(self.friction, str):
            if self.friction != "matched":
                raise ValueError(
                    f"simulate.friction={self.friction!r}: give a number (1/ps) or matched"
                )
            if self.integrator not in ("langevin", "brownian", "dpd"):
                raise ValueError(
                    "simulate.friction=matched fits a Langevin, Brownian or DPD friction; set "
                    "simulate.integrator=langevin, brownian or dpd"
                )
        elif self.friction < 0:
            raise ValueError(f"simulate.friction must be >= 0 (1/ps), got {self.friction}")
        if self.calibration_frictions is None:
            frictions = (
                (100.0, 300.0, 1000.0) if self.integrator == "brownian" else (1.0, 10.0, 30.0)
            )
            object.__setattr__(self, "calibration_frictions", frictions)
        if self.calibration_target not in TARGETS:
            raise ValueError(
                f"simulate.calibration_target '{self.calibration_target}' is unknown; use one "
                f"of {TARGETS}"
            )
        if self.calibration_target != "msd" and self.integrator == "brownian":
            raise ValueError(
                f"simulate.calibration_target={self.calibration_target} needs velocities, "
                "which Brownian dynamics has none of; use simulate.calibration_target=msd"
            )
        if self.vacf_max_lag <= 0:
            raise ValueError(f"simulate.vacf_max_lag must be positive, got {self.vacf_max_lag} ps")
        if self.calibration_refinements < 0:
            raise ValueError(
                f"simulate.calibration_refinements must be >= 0, got {self.calibration_refinements}"
            )
        for name in ("timestep", "steps", "report_interval", "replicas"):
            if getattr(self, name) <= 0:
                raise ValueError(f"simulate.{name} must be positive, got {getattr(self, name)}")
        if self.kernels not in KERNELS:
            raise ValueError(f"simulate.kernels '{self.kernels}' is unknown; use one of {KERNELS}")
        if self.steps % self.report_interval:
            raise ValueError(
                f"simulate.steps ({self.steps}) is not a multiple of simulate.report_interval "
                f"({self.report_interval}); make it one"
            )


@dataclass
class MDResult:
    """Outcome of a CG run: stability, where it stopped, speed, where it ran (OpenMM
    platform; CPU threads, None on a GPU) and the files written."""

    stable: bool
    message: str
    steps_completed: int
    n_frames: int
    ms_per_step: float
    ns_per_day: float
    platform: str
    threads: int | None
    seed: int
    trajectory: str
    topology: str
    state_log: str

    def to_json(self) -> dict:
        return asdict(self)


def model_file(plain: Path, fused: Path | None, settings: MDSettings) -> Path:
    """The export of a model that ``settings.kernels`` runs: its fused flavour (``fused``,
    None when it has none) or its plain TorchScript file; a native OpenMM System (``.xml``,
    a classical model) runs as it is."""
    if settings.kernels == "plain" or Path(plain).suffix == ".xml":
        return Path(plain)
    if fused is None or not Path(fused).is_file():
        if settings.kernels == "fused":
            raise ValueError(
                f"{plain} has no fused export (the kernels did not build, or a network has more "
                "than one interaction block); set simulate.kernels=auto or plain"
            )
        return Path(plain)
    if select_platform(settings.platform)[0].getName() != "CPU":
        if settings.kernels == "fused":
            raise ValueError(
                f"the fused kernels run on the CPU platform only, not {settings.platform}; set "
                "simulate.platform=CPU or simulate.kernels=auto"
            )
        return Path(plain)
    return Path(fused)


def cg_simulation(
    model_path: Path,
    masses: np.ndarray,
    box: np.ndarray,
    settings: MDSettings,
    *,
    seed: int | None = None,
    bead_names: list[str] | None = None,
    bonds: np.ndarray | None = None,
) -> app.Simulation:
    """An OpenMM Simulation of the exported model at ``model_path`` with the integrator,
    platform and threads of ``settings`` (no positions yet); ``seed`` (default
    ``settings.seed``) seeds the thermostat. ``bonds`` [K, 2] become topology bonds, so that
    trajectory writers keep molecules whole."""
    if settings.friction == "matched" and not settings.frictions:
        raise ValueError("simulate.friction=matched runs with the calibrate stage's frictions")
    types, type_frictions = None, None
    if settings.frictions or settings.integrator in ("brownian", "dpd"):
        if bead_names is None:
            raise ValueError("frictions per bead type (or DPD, Brownian) need the type names")
        names, types = np.unique(np.asarray(bead_names), return_inverse=True)
        named = settings.frictions or {}
        type_frictions = named_frictions(list(names), named, settings.friction)
    integrator = make_integrator(
        settings.integrator,
        settings.timestep,
        temperature=settings.temperature,
        friction=settings.friction,
        seed=settings.seed if seed is None else seed,
        types=types,
        type_frictions=type_frictions,
        dpd_cutoff=settings.dpd_cutoff,
    )
    return model_simulation(
        model_path,
        masses,
        box,
        integrator,
        platform=settings.platform,
        threads=settings.threads,
        bead_names=bead_names,
        bonds=bonds,
    )


def run_cg_md(
    model_path: Path,
    positions: np.ndarray,
    box: np.ndarray,
    masses: np.ndarray,
    settings: MDSettings,
    out_dir: Path,
    *,
    seed: int | None = None,
    bead_names: list[str] | None = None,
    bonds: np.ndarray | None = None,
    progress: bool = True,
) -> MDResult:
    """Run CG MD from ``positions`` [N, 3] nm in ``box`` [3, 3] nm for ``settings.steps``
    steps, or continue the run whose checkpoint is in ``out_dir``.

    Writes trajectory.dcd, topology.pdb (the minimised start), state.csv, checkpoint.chk
    and, if the run goes bad, last_good.pdb into ``out_dir``. ``seed`` (default
    ``settings.seed``) seeds the velocities and the thermostat.
    """
    check_model_evaluates(model_path, positions, box)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    seed = settings.seed if seed is None else seed
    simulation = cg_simulation(
        model_path, masses, box, settings, seed=seed, bead_names=bead_names, bonds=bonds
    )
    interval = settings.report_interval
    monitor = StabilityReporter(
        interval, settings.min_distance, settings.max_temperature_factor * settings.temperature
    )
    reporters = [
        monitor,
        TrajectoryReporter(paths["trajectory.dcd"], interval),
        StateReporter(paths["state.csv"], interval),
        CheckpointReporter(paths["checkpoint.chk"], interval),
        ProgressReporter(interval, settings.steps, enabled=progress),
    ]
    if resume(simulation, paths["checkpoint.chk"], reporters):
        log.info("CG MD resumes at step %d from %s", simulation.currentStep, out)
    else:
        for name in ("trajectory.dcd", "state.csv", "last_good.pdb"):
            paths[name].unlink(missing_ok=True)
        start(
            simulation,
            positions,
            minimize=(10.0, 200) if settings.minimize else None,
            temperature=settings.temperature,
            seed=seed,
        )
        state = simulation.context.getState(getPositions=True)
        with open(paths["topology.pdb"], "w") as handle:
            app.PDBFile.writeFile(simulation.topology, state.getPositions(), handle)

    outcome = run(simulation, settings.steps - simulation.currentStep, reporters)
    if not outcome.stable:
        with open(paths["last_good.pdb"], "w") as handle:
            app.PDBFile.writeFile(simulation.topology, monitor.last_good * unit.nanometer, handle)
        log.warning(
            "CG MD stopped: %s (last good frame: %s)", outcome.message, paths["last_good.pdb"]
        )
    return _result(outcome, settings, seed, paths, ran_on(simulation))


def _result(
    outcome: RunOutcome,
    settings: MDSettings,
    seed: int,
    paths: dict[str, Path],
    where: dict[str, Any],
) -> MDResult:
    """The MDResult of a CG run that ended as ``outcome``."""
    done = outcome.last_good_step
    run_steps = max(done - outcome.start_step, 0)
    return MDResult(
        stable=outcome.stable,
        message=outcome.message,
        steps_completed=done,
        n_frames=done // settings.report_interval,
        ms_per_step=1000.0 * outcome.elapsed / max(run_steps, 1),
        ns_per_day=ns_per_day(run_steps * settings.timestep, outcome.elapsed),
        **where,
        seed=seed,
        trajectory=str(paths["trajectory.dcd"]),
        topology=str(paths["topology.pdb"]),
        state_log=str(paths["state.csv"]),
    )


def check_model_evaluates(model_path: Path, positions: np.ndarray, box: np.ndarray) -> None:
    """Raise a one-line error if the exported model cannot evaluate ``positions`` [N, 3] in
    ``box`` [3, 3] (nm). Checked in Python first: an exception thrown inside OpenMM's CPU
    threads would abort the whole process instead. (A native System, ``.xml``, has nothing
    to check.)"""
    if Path(model_path).suffix == ".xml":
        return
    module = load_exported(model_path)
    try:
        module(
            torch.as_tensor(positions, dtype=torch.float64),
            torch.as_tensor(box, dtype=torch.float64),
        )
    except (torch.jit.Error, RuntimeError) as error:
        lines = [line for line in str(error).splitlines() if line.startswith("builtins.")]
        reason = lines[-1].split(": ", 1)[-1] if lines else str(error).splitlines()[0]
        raise ValueError(f"{model_path} cannot evaluate this system: {reason}") from None


def run_replicas(
    model_path: Path,
    starts: np.ndarray,
    boxes: np.ndarray,
    masses: np.ndarray,
    settings: MDSettings,
    out_dir: Path,
    **kwargs,
) -> list[MDResult]:
    """``settings.replicas`` independent runs in ``out_dir/replica_<k>``: replica k starts
    from frame k of ``starts`` [F, N, 3] (cycling; boxes [F, 3, 3]) with seed
    ``settings.seed + k``. Each resumes from its checkpoint; keyword arguments go to
    :func:`run_cg_md`."""
    results = []
    for k in range(settings.replicas):
        frame = k % len(starts)
        results.append(
            run_cg_md(
                model_path,
                starts[frame],
                boxes[frame],
                masses,
                settings,
                Path(out_dir) / f"replica_{k}",
                seed=settings.seed + k,
                **kwargs,
            )
        )
    return results


def time_force_evaluation(
    model_path: Path,
    positions: np.ndarray,
    box: np.ndarray,
    masses: np.ndarray,
    repeats: int = 10,
    platform: str = "CPU",
    warmup: int = 5,
) -> float:
    """Milliseconds per energy + force evaluation of an exported model inside OpenMM, at
    positions jittered by 1e-4 nm (fresh forces every call, the Verlet list reused)."""
    verlet = make_integrator("verlet", 0.001)
    context = model_simulation(model_path, masses, box, verlet, platform=platform).context
    rng = np.random.default_rng(0)
    # Warm-up: TorchScript's profiling executor optimises the graph over the first calls.
    for _ in range(warmup):
        context.setPositions(positions + rng.normal(0.0, 1e-4, positions.shape))
        context.getState(getEnergy=True, getForces=True)
    begin = time.perf_counter()
    for _ in range(repeats):
        context.setPositions(positions + rng.normal(0.0, 1e-4, positions.shape))
        context.getState(getEnergy=True, getForces=True)
    return 1000.0 * (time.perf_counter() - begin) / repeats


def model_forces(
    model_path: Path,
    positions: np.ndarray,
    boxes: np.ndarray,
    masses: np.ndarray,
    platform: str = "CPU",
) -> np.ndarray:
    """Forces (kJ/mol/nm, [T, N, 3]) of an exported model (TorchScript, fused or native
    ``.xml``) inside OpenMM on frames of ``positions`` [T, N, 3] in ``boxes`` [T, 3, 3] (nm):
    what the model's MD feels, for force errors against any labels."""
    verlet = make_integrator("verlet", 0.001)
    context = model_simulation(model_path, masses, boxes[0], verlet, platform=platform).context
    forces = np.empty((len(positions), *positions.shape[1:]))
    for t, (x, box) in enumerate(zip(positions, boxes, strict=True)):
        context.setPeriodicBoxVectors(*box)
        context.setPositions(x)
        state = context.getState(getForces=True)
        forces[t] = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
    return forces
