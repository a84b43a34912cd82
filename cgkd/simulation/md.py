"""CG molecular dynamics of an exported model in OpenMM through openmmtorch's TorchForce.

The run is watched: every report interval the positions, energy, closest bead
distance and temperature are checked. A run that goes bad stops, keeps only good
frames in the trajectory, writes the last good frame and reports the step, so a
pipeline can record it as unstable instead of crashing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from cgkd.units import KB_KJ_PER_MOL_K, ns_per_day

# isort: off
# torch before openmm: OpenMM loads its plugins on import, and the openmmtorch plugin needs
# the libraries that torch loads; imported later, TorchForce has no kernel on any platform.
import torch  # noqa: F401
import openmm
import openmm.app as app
import openmm.unit as unit

# openmmtorch's SWIG module imports the deprecated simtk.openmm, which logs a warning that
# means nothing to our users; silence just that import.
logging.disable(logging.WARNING)
from openmmtorch import TorchForce  # noqa: E402

logging.disable(logging.NOTSET)
# isort: on

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MDSettings:
    """Langevin (middle) CG MD settings in OpenMM units (K, ps, 1/ps, nm)."""

    temperature: float = 300.0
    timestep: float = 0.002
    friction: float = 1.0
    steps: int = 10000
    report_interval: int = 100
    minimize: bool = True
    seed: int = 0
    platform: str = "CPU"
    threads: int | None = None
    min_distance: float = 0.12
    max_temperature_factor: float = 3.0


@dataclass
class MDResult:
    """Outcome of a CG run: stability, speed and the files written."""

    stable: bool
    message: str
    steps_completed: int
    n_frames: int
    ms_per_step: float
    ns_per_day: float
    trajectory: Path
    topology: Path
    state_log: Path


def bead_topology(n_beads: int, box: np.ndarray, names: list[str] | None = None) -> app.Topology:
    """An OpenMM topology of ``n_beads`` one-bead residues named by bead type."""
    topology = app.Topology()
    chain = topology.addChain()
    for index in range(n_beads):
        name = names[index] if names else "CG"
        residue = topology.addResidue(name[:3].upper(), chain)
        topology.addAtom(name[:4].upper(), None, residue)
    topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in box] * unit.nanometer)
    return topology


def build_system(model_path: Path, masses: np.ndarray, box: np.ndarray) -> openmm.System:
    """An OpenMM System of beads (masses, amu) with the exported model as a periodic TorchForce."""
    _check_torch_plugin()
    system = openmm.System()
    for mass in masses:
        system.addParticle(float(mass))
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    force = TorchForce(str(model_path))
    force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    return system


def _check_torch_plugin() -> None:
    """Raise if OpenMM failed to load the openmmtorch kernels (openmm imported before torch)."""
    failures = [f for f in openmm.Platform.getPluginLoadFailures() if "TorchReference" in f]
    if failures:
        raise RuntimeError(
            f"OpenMM could not load the openmmtorch plugin ({failures[0].split(': ', 1)[-1]}); "
            "import torch (or cgkd) before openmm in your script"
        )


def run_cg_md(
    model_path: Path,
    positions: np.ndarray,
    box: np.ndarray,
    masses: np.ndarray,
    settings: MDSettings,
    out_dir: Path,
    *,
    bead_names: list[str] | None = None,
    progress: bool = True,
) -> MDResult:
    """Run Langevin CG MD from ``positions`` [N, 3] nm in ``box`` [3, 3] nm; write trajectory.dcd,
    topology.pdb (first frame), state.csv and, on failure, last_good.pdb into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    system = build_system(model_path, masses, box)
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature * unit.kelvin,
        settings.friction / unit.picosecond,
        settings.timestep * unit.picosecond,
    )
    integrator.setRandomNumberSeed(settings.seed)
    platform = openmm.Platform.getPlatformByName(settings.platform)
    properties = (
        {"Threads": str(settings.threads)}
        if settings.threads and settings.platform == "CPU"
        else {}
    )
    context = openmm.Context(system, integrator, platform, properties)
    context.setPositions(positions)
    if settings.minimize:
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(settings.temperature * unit.kelvin, settings.seed)

    topology = bead_topology(len(masses), box, bead_names)
    paths = {
        name: out_dir / name
        for name in ("trajectory.dcd", "topology.pdb", "state.csv", "last_good.pdb")
    }
    state = context.getState(getPositions=True)
    with open(paths["topology.pdb"], "w") as handle:
        app.PDBFile.writeFile(topology, state.getPositions(), handle)
    n_dof = 3 * len(masses)
    rows: list[tuple[float, ...]] = []
    stable, message, done, frames = True, "completed", 0, 0
    last_good = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    start = time.perf_counter()
    with open(paths["trajectory.dcd"], "wb") as handle:
        dcd = app.DCDFile(handle, topology, settings.timestep, 0, settings.report_interval)
        n_chunks = max(1, settings.steps // settings.report_interval)
        for _ in tqdm(range(n_chunks), desc="CG MD", disable=not progress, unit="report"):
            try:
                integrator.step(settings.report_interval)
            except openmm.OpenMMException as error:
                stable, message = False, f"OpenMM failed after step {done}: {error}"
                break
            state = context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=True)
            x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            temperature = 2.0 * kinetic / (n_dof * KB_KJ_PER_MOL_K)
            problem = _check_frame(x, box, potential, temperature, settings)
            if problem:
                stable, message = (
                    False,
                    f"unstable at step {done + settings.report_interval}: {problem}",
                )
                break
            done += settings.report_interval
            dcd.writeModel(
                x * unit.nanometer,
                periodicBoxVectors=[openmm.Vec3(*r) for r in box] * unit.nanometer,
            )
            frames += 1
            last_good = x
            rows.append((done, done * settings.timestep, potential, kinetic, temperature))
    elapsed = time.perf_counter() - start
    np.savetxt(
        paths["state.csv"],
        np.array(rows).reshape(-1, 5),
        delimiter=",",
        header="step,time_ps,potential_kj_mol,kinetic_kj_mol,temperature_k",
        comments="",
    )
    if not stable:
        with open(paths["last_good.pdb"], "w") as handle:
            app.PDBFile.writeFile(topology, last_good * unit.nanometer, handle)
        log.warning("CG MD stopped: %s (last good frame: %s)", message, paths["last_good.pdb"])
    return MDResult(
        stable=stable,
        message=message,
        steps_completed=done,
        n_frames=frames,
        ms_per_step=1000.0 * elapsed / max(done, 1),
        ns_per_day=ns_per_day(done * settings.timestep, elapsed),
        trajectory=paths["trajectory.dcd"],
        topology=paths["topology.pdb"],
        state_log=paths["state.csv"],
    )


def _check_frame(
    positions: np.ndarray, box: np.ndarray, energy: float, temperature: float, settings: MDSettings
) -> str:
    """Empty if the frame is sound, else what is wrong with it."""
    if not (np.isfinite(positions).all() and np.isfinite(energy)):
        return "positions or energy became NaN/Inf"
    if temperature > settings.max_temperature_factor * settings.temperature:
        return f"temperature ran away to {temperature:.0f} K"
    edges = np.diag(box)
    tree = cKDTree(np.mod(positions, edges), boxsize=edges)
    distances, _ = tree.query(np.mod(positions, edges), k=2)
    closest = float(distances[:, 1].min())
    if closest < settings.min_distance:
        return (
            f"beads collapsed (closest pair {closest:.3f} nm < "
            f"min_distance {settings.min_distance} nm)"
        )
    return ""


def time_force_evaluation(
    model_path: Path,
    positions: np.ndarray,
    box: np.ndarray,
    masses: np.ndarray,
    repeats: int = 10,
    platform: str = "CPU",
) -> float:
    """Milliseconds per energy + force evaluation of an exported model inside OpenMM."""
    system = build_system(model_path, masses, box)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform)
    )
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm-up: TorchScript optimises the graph over the first calls
        context.setPositions(positions + rng.normal(0.0, 1e-4, positions.shape))
        context.getState(getEnergy=True, getForces=True)
    start = time.perf_counter()
    for _ in range(repeats):
        # New positions invalidate OpenMM's cached forces, so each call evaluates the model.
        context.setPositions(positions + rng.normal(0.0, 1e-4, positions.shape))
        context.getState(getEnergy=True, getForces=True)
    return 1000.0 * (time.perf_counter() - start) / repeats
