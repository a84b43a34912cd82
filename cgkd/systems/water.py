"""All-atom reference data: a cubic box of rigid 3-site water simulated with OpenMM.

The box is built with ``Modeller.addSolvent``, rescaled (moving whole molecules) to the target
mass density, minimised, equilibrated and sampled under NVT Langevin dynamics with PME
electrostatics. Every ``save_interval`` steps the positions (nm), the forces from
``State.getForces`` (kJ/mol/nm; constraint forces are not included) and the box are stored.

Positions are written with ``enforcePeriodicBox=True``: OpenMM wraps each molecule as a whole
(by its centre), so molecules are intact but may stick out of the box; the mapping makes
molecules whole again either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit
from tqdm.auto import tqdm

from cgkd.io.atomic import atomic_path
from cgkd.io.frames import Frames
from cgkd.io.h5md import write_h5md
from cgkd.units import AVOGADRO, NM3_PER_CM3, ns_per_day

#: Supported rigid 3-site water models: force-field file and the Modeller box to start from.
WATER_MODELS: dict[str, tuple[str, str]] = {
    "tip3p": ("amber14/tip3p.xml", "tip3p"),
    "tip3pfb": ("amber14/tip3pfb.xml", "tip3p"),
    "spce": ("amber14/spce.xml", "spce"),
    "opc3": ("amber14/opc3.xml", "tip3p"),
}

#: Energy minimisation only removes clashes from the rescaled box; equilibration does the rest.
#: RMS force tolerance in kJ/mol/nm (constraint directions keep it above ~600 for water).
_MINIMISE_TOLERANCE = 100.0
_MINIMISE_MAX_ITERATIONS = 200


@dataclass
class WaterBoxSpec:
    """What to simulate. Units: K, ps, 1/ps, nm, g/cm^3; ``save_interval`` in MD steps.

    ``density`` is the mass density the initial box is scaled to; the box then stays fixed.
    ``threads`` sets the CPU platform's thread count (``None``: OpenMM's default, all cores).
    A run is reproducible for the same seed, platform and thread count (forces are computed
    deterministically; another thread count gives a different trajectory).
    """

    n_molecules: int = 300
    water_model: str = "tip3p"
    temperature: float = 300.0
    timestep: float = 0.002
    friction: float = 1.0
    nonbonded_cutoff: float = 0.9
    equilibration: float = 20.0
    production: float = 80.0
    save_interval: int = 100
    seed: int = 0
    platform: str = "CPU"
    threads: int | None = None
    density: float = 0.997

    def __post_init__(self) -> None:
        if self.water_model not in WATER_MODELS:
            raise ValueError(
                f"water_model {self.water_model!r} is unsupported; use one of {list(WATER_MODELS)}"
            )
        positive = {
            "n_molecules": self.n_molecules,
            "temperature": self.temperature,
            "timestep": self.timestep,
            "friction": self.friction,
            "nonbonded_cutoff": self.nonbonded_cutoff,
            "production": self.production,
            "save_interval": self.save_interval,
            "density": self.density,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"WaterBoxSpec.{name} must be positive, got {value}")
        if self.equilibration < 0:
            raise ValueError(
                f"WaterBoxSpec.equilibration must be >= 0 ps, got {self.equilibration}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"WaterBoxSpec.threads must be >= 1 or None, got {self.threads}")
        if self.production_steps < self.save_interval:
            raise ValueError(
                f"production of {self.production} ps is shorter than one save interval "
                f"({self.save_interval} steps of {self.timestep} ps); lengthen production"
            )

    @property
    def production_steps(self) -> int:
        """Number of production MD steps (a whole number of save intervals)."""
        n_frames = round(self.production / self.timestep) // self.save_interval
        return n_frames * self.save_interval

    @property
    def equilibration_steps(self) -> int:
        """Number of equilibration MD steps."""
        return round(self.equilibration / self.timestep)


@dataclass(frozen=True)
class GeneratedSystem:
    """Files and facts of a generated all-atom data set (nm, g/cm^3, ns/day)."""

    trajectory: Path
    topology: Path
    ns_per_day: float
    n_atoms: int
    n_frames: int
    box_edge_nm: float
    density_g_cm3: float


def build_water_context(
    spec: WaterBoxSpec,
) -> tuple[openmm.Context, openmm.Integrator, openmm.System, app.Topology]:
    """The water box of ``spec`` as a ready OpenMM Context (positions set and minimised)."""
    platform, properties = _platform(spec)
    xml, box_model = WATER_MODELS[spec.water_model]
    forcefield = app.ForceField(xml)
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model=box_model, numAdded=spec.n_molecules)
    topology = modeller.topology
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    _rescale_to_density(topology, positions, spec)

    system = forcefield.createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=spec.nonbonded_cutoff * unit.nanometer,
        constraints=None,
        rigidWater=True,
    )
    integrator = openmm.LangevinMiddleIntegrator(
        spec.temperature * unit.kelvin,
        spec.friction / unit.picosecond,
        spec.timestep * unit.picosecond,
    )
    integrator_seed, velocity_seed = np.random.default_rng(spec.seed).integers(1, 2**31 - 1, 2)
    integrator.setRandomNumberSeed(int(integrator_seed))
    context = openmm.Context(system, integrator, platform, properties)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, _MINIMISE_TOLERANCE, _MINIMISE_MAX_ITERATIONS)
    context.setVelocitiesToTemperature(spec.temperature * unit.kelvin, int(velocity_seed))
    return context, integrator, system, topology


def generate_water(spec: WaterBoxSpec, out_dir: Path, *, progress: bool = True) -> GeneratedSystem:
    """Simulate ``spec`` and write ``out_dir/aa.h5md`` (H5MD) and ``out_dir/aa_topology.pdb``."""
    out_dir = Path(out_dir)
    context, integrator, system, topology = build_water_context(spec)
    _run(integrator, spec.equilibration_steps, spec.save_interval, "equilibration", progress)

    context.setTime(0.0)
    context.setStepCount(0)
    n_frames = spec.production_steps // spec.save_interval
    n_atoms = system.getNumParticles()
    pos = np.empty((n_frames, n_atoms, 3))
    forces = np.empty((n_frames, n_atoms, 3))
    boxes = np.empty((n_frames, 3, 3))
    times = np.empty(n_frames)
    steps = np.empty(n_frames, dtype=np.int64)
    start = time.perf_counter()
    for i in tqdm(range(n_frames), desc="production", unit="frame", disable=not progress):
        integrator.step(spec.save_interval)
        state = context.getState(positions=True, forces=True, enforcePeriodicBox=True)
        pos[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        forces[i] = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        boxes[i] = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        times[i] = state.getTime().value_in_unit(unit.picosecond)
        steps[i] = state.getStepCount()
        if not (np.isfinite(pos[i]).all() and np.isfinite(forces[i]).all()):
            raise ValueError(
                f"water simulation became non-finite at production step {steps[i]}; "
                f"use a smaller timestep (now {spec.timestep} ps) or longer equilibration"
            )
    wall = time.perf_counter() - start

    masses = np.array(
        [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n_atoms)]
    )
    frames = Frames(
        positions=pos,
        forces=forces,
        boxes=boxes,
        times=times,
        masses=masses,
        types=np.zeros(n_atoms, dtype=np.int64),
        type_names=["HOH"],
    )
    constraints = np.array(
        [system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())],
        dtype=np.int64,
    ).reshape(-1, 2)
    speed = ns_per_day(n_frames * spec.save_interval * spec.timestep, wall)
    trajectory = write_h5md(
        out_dir / "aa.h5md",
        frames,
        config={"water_box": asdict(spec), "ns_per_day": speed},
        steps=steps,
        constraints=constraints,
    )
    topology_path = out_dir / "aa_topology.pdb"
    with atomic_path(topology_path) as tmp, open(tmp, "w") as handle:
        app.PDBFile.writeFile(topology, pos[0] * unit.nanometer, handle)
    return GeneratedSystem(
        trajectory=trajectory,
        topology=topology_path,
        ns_per_day=speed,
        n_atoms=n_atoms,
        n_frames=n_frames,
        box_edge_nm=float(boxes[0, 0, 0]),
        density_g_cm3=float(_density(masses.sum(), abs(np.linalg.det(boxes[0])))),
    )


def _rescale_to_density(topology: app.Topology, positions: np.ndarray, spec: WaterBoxSpec) -> None:
    """Shift molecules in place so the cubic box has ``spec.density``."""
    masses = np.array([atom.element.mass.value_in_unit(unit.dalton) for atom in topology.atoms()])
    volume = masses.sum() / AVOGADRO / spec.density * NM3_PER_CM3
    edge = volume ** (1.0 / 3.0)
    if spec.nonbonded_cutoff >= edge / 2:
        needed = math.ceil((2 * spec.nonbonded_cutoff) ** 3 / volume * spec.n_molecules) + 1
        raise ValueError(
            f"water box edge {edge:.3f} nm ({spec.n_molecules} molecules at {spec.density} g/cm^3) "
            f"must exceed twice nonbonded_cutoff={spec.nonbonded_cutoff} nm; use n_molecules >= "
            f"{needed} or a smaller cutoff"
        )
    old_edge = topology.getUnitCellDimensions().value_in_unit(unit.nanometer)[0]
    residue = np.array([atom.residue.index for atom in topology.atoms()])
    centres = np.zeros((topology.getNumResidues(), 3))
    np.add.at(centres, residue, positions * masses[:, None])
    centres /= np.bincount(residue, weights=masses)[:, None]
    positions += centres[residue] * (edge / old_edge - 1.0)
    topology.setPeriodicBoxVectors(np.eye(3) * edge * unit.nanometer)


def _platform(spec: WaterBoxSpec) -> tuple[openmm.Platform, dict[str, str]]:
    """The OpenMM platform named in ``spec`` and its properties (deterministic forces, threads)."""
    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    if spec.platform not in names:
        raise ValueError(
            f"OpenMM platform {spec.platform!r} is not available; choose one of {names}"
        )
    platform = openmm.Platform.getPlatformByName(spec.platform)
    supported = platform.getPropertyNames()
    properties = {"DeterministicForces": "true"} if "DeterministicForces" in supported else {}
    if spec.threads is not None:
        if "Threads" not in supported:
            raise ValueError(f"threads is set but OpenMM platform {spec.platform!r} has no threads")
        properties["Threads"] = str(spec.threads)
    return platform, properties


def _run(
    integrator: openmm.Integrator, n_steps: int, chunk: int, desc: str, progress: bool
) -> None:
    """Advance ``n_steps`` MD steps in chunks, with a progress bar."""
    with tqdm(total=n_steps, desc=desc, unit="step", disable=not progress) as bar:
        done = 0
        while done < n_steps:
            todo = min(chunk, n_steps - done)
            integrator.step(todo)
            done += todo
            bar.update(todo)


def _density(mass_amu: float, volume_nm3: float) -> float:
    """Mass density in g/cm^3 of ``mass_amu`` in ``volume_nm3``."""
    return mass_amu / AVOGADRO / (volume_nm3 / NM3_PER_CM3)
