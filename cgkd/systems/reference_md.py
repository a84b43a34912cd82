"""Run a built-in system's MD protocol with OpenMM and write its all-atom H5MD data set.

The protocol of :class:`cgkd.systems.base.AASpec`: minimise; optional NPT (Monte Carlo
barostat), after which the box is set to the mean volume of the NPT run's second half by
scaling molecule centres; NVT equilibration; NVT production that streams positions, forces
(``State.getForces``: constraint forces are not included, virtual-site forces are already
distributed to real atoms) and boxes into ``aa.h5md``. Virtual sites are left out of the
data set and of the topology file; constrained atom pairs are recorded.

Positions are written with ``enforcePeriodicBox=True``: OpenMM wraps each molecule as a whole
(by its centre), so molecules are intact but may stick out of the box; the mapping makes
molecules whole again either way. Every file appears under its final name only once complete.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# isort: off
from cgkd.simulation.engine import (  # before openmm
    create_simulation,
    make_integrator,
    ran_on,
    run,
    start,
)
import openmm
from openmm import app, unit
# isort: on

from matplotlib.figure import Figure

from cgkd.io.atomic import atomic_path
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDWriter
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.dense import Select, record_dense
from cgkd.simulation.engine import RunOutcome
from cgkd.simulation.reporters import (
    CallbackReporter,
    ProgressReporter,
    UnstableSimulationError,
)
from cgkd.simulation.system import openmm_seed
from cgkd.systems.base import AASpec, BuiltSystem
from cgkd.units import AVOGADRO, NM3_PER_CM3, ns_per_day

#: Energy minimisation only removes clashes from the initial box; equilibration does the rest.
#: RMS force tolerance in kJ/mol/nm (constraint directions keep it high for rigid water).
_MINIMISE_TOLERANCE = 100.0
_MINIMISE_MAX_ITERATIONS = 500

_FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


@dataclass(frozen=True)
class GeneratedSystem:
    """Files and facts of a generated all-atom data set (nm, g/cm^3, ns/day).

    ``npt_density_g_cm3`` and ``npt_density_std`` are the mean and standard deviation of the
    density over the second half of the NPT phase (``None`` without one); ``density_g_cm3`` is
    the density of the production box. ``platform`` and ``threads`` are where the production
    ran (``threads``: the CPU platform's thread count, ``None`` elsewhere), which decide
    whether the same seed repeats the trajectory bit for bit (:class:`~cgkd.systems.base.AASpec`).
    """

    trajectory: Path
    topology: Path
    ns_per_day: float
    n_atoms: int
    n_frames: int
    box_lengths_nm: tuple[float, float, float]
    density_g_cm3: float
    npt_density_g_cm3: float | None = None
    npt_density_std: float | None = None
    platform: str | None = None
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def prepare(spec: AASpec) -> tuple[app.Simulation, BuiltSystem]:
    """Build ``spec`` into an NVT Langevin Simulation, minimised, with velocities at
    temperature."""
    built = spec.build()
    seeds = _seeds(spec)
    simulation = _simulation(built.system, built.topology, spec, seeds[0])
    start(
        simulation,
        built.positions,
        minimize=(_MINIMISE_TOLERANCE, _MINIMISE_MAX_ITERATIONS),
        temperature=spec.temperature,
        seed=seeds[1],
    )
    return simulation, built


def generate(
    spec: AASpec,
    out_dir: str | Path,
    *,
    config: dict[str, Any] | None = None,
    progress: bool = True,
) -> GeneratedSystem:
    """Run the protocol of ``spec``; write ``out_dir/aa.h5md`` and ``out_dir/aa_topology.pdb``.

    ``config`` is stored in the H5MD file next to the spec, the build facts and the measured
    speed and densities. NPT densities, if any, also go to ``out_dir/npt.csv`` and ``npt.png``.
    """
    out_dir = Path(out_dir)
    simulation, built = prepare(spec)
    system = built.system
    npt_density: tuple[float, float] | None = None
    if spec.npt_steps > 0:
        simulation, npt_density = _npt(simulation, built, spec, out_dir, progress)
    steps = spec.equilibration_steps
    bar = ProgressReporter(spec.save_interval, steps, "NVT equilibration", enabled=progress)
    _raise_if_failed(run(simulation, steps, [bar]), spec, "NVT equilibration")

    real = np.array([i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)])
    masses = np.array([system.getParticleMass(int(i)).value_in_unit(unit.dalton) for i in real])
    residues = [atom.residue.name for atom in built.topology.atoms()]
    type_names = sorted({residues[i] for i in real})
    types = np.searchsorted(type_names, [residues[i] for i in real])
    record: dict[str, Any] = {
        **(config or {}),
        "system": {"kind": type(spec).__name__, **asdict(spec)},
        "facts": built.facts,
    }
    simulation.context.setTime(0.0)
    simulation.currentStep = 0
    n_frames = spec.production_steps // spec.save_interval
    frame: Frames | None = None
    with H5MDWriter(
        out_dir / "aa.h5md",
        masses=masses,
        types=types,
        type_names=type_names,
        config=record,
        constraints=_real_constraints(system, real),
    ) as writer:

        def write(simulation: app.Simulation, state: openmm.State) -> None:
            nonlocal frame
            frame = _snapshot(state, real, masses, types, type_names)
            if not (np.isfinite(frame.positions).all() and np.isfinite(frame.forces).all()):
                raise UnstableSimulationError(simulation.currentStep, "non-finite")
            writer.append(frame, steps=np.array([simulation.currentStep]))

        reporters = [
            CallbackReporter(spec.save_interval, write, ("positions", "forces"), periodic=True),
            ProgressReporter(
                spec.save_interval, n_frames * spec.save_interval, "production", enabled=progress
            ),
        ]
        outcome = run(simulation, n_frames * spec.save_interval, reporters)
        _raise_if_failed(outcome, spec, "production")
        speed = ns_per_day(n_frames * spec.save_interval * spec.timestep, outcome.elapsed)
        writer.config["ns_per_day"] = speed
        where = ran_on(simulation)
        writer.config["ran_on"] = where
        if npt_density is not None:
            writer.config["npt_density_g_cm3"] = list(npt_density)
    box = frame.boxes[0]
    topology_path = _write_topology(built.topology, real, frame.positions[0], box, out_dir)
    return GeneratedSystem(
        trajectory=writer.path,
        topology=topology_path,
        ns_per_day=speed,
        n_atoms=len(real),
        n_frames=n_frames,
        box_lengths_nm=tuple(float(x) for x in np.linalg.norm(box, axis=1)),
        density_g_cm3=density(masses.sum(), abs(np.linalg.det(box))),
        npt_density_g_cm3=None if npt_density is None else npt_density[0],
        npt_density_std=None if npt_density is None else npt_density[1],
        **where,
    )


def dense_segment(
    spec: AASpec,
    positions: np.ndarray,
    box: np.ndarray,
    picoseconds: float,
    select: Select,
    **beads: Any,
) -> Trajectory:
    """AA MD of ``spec`` from ``positions`` [atoms, 3] nm of the data's (real) atoms in ``box``
    [3, 3] nm, with fresh velocities, recorded densely
    (:func:`~cgkd.simulation.dense.record_dense`): ``select`` maps the real atoms' [atoms, 3]
    positions and velocities to beads; ``beads`` are the Trajectory's name, types and
    type_names."""
    built = spec.build()
    system = built.system
    real = np.array([i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)])
    if len(real) != len(positions):
        raise ValueError(
            f"the AA data have {len(positions)} atoms but system {type(spec).__name__} has "
            f"{len(real)}; make the data with this system's settings"
        )
    placed = np.zeros((system.getNumParticles(), 3))
    placed[real] = positions
    thermostat, velocities, _ = _seeds(spec)
    simulation = _simulation(system, built.topology, spec, thermostat + 1)
    start(
        simulation,
        placed,
        box=box,
        constraint_tolerance=1e-8,
        temperature=spec.temperature,
        seed=velocities + 1,
    )
    return record_dense(
        simulation, spec.timestep, picoseconds, lambda atoms: select(atoms[real]), **beads
    )


def density(mass_amu: float, volume_nm3: float) -> float:
    """Mass density in g/cm^3 of ``mass_amu`` in ``volume_nm3``."""
    return float(mass_amu / AVOGADRO / (volume_nm3 / NM3_PER_CM3))


def _seeds(spec: AASpec) -> list[int]:
    """The seeds of a protocol: thermostat, velocities, barostat."""
    return [int(k) for k in np.random.default_rng(spec.seed).integers(0, 2**31 - 2, 3)]


def _simulation(
    system: openmm.System, topology: app.Topology, spec: AASpec, seed: int
) -> app.Simulation:
    """A Langevin Simulation of ``system`` on the platform of ``spec`` (deterministic forces)."""
    integrator = make_integrator(
        "langevin", spec.timestep, temperature=spec.temperature, friction=spec.friction, seed=seed
    )
    return create_simulation(
        system,
        integrator,
        topology=topology,
        platform=spec.platform,
        threads=spec.threads,
        deterministic=True,
    )


def _raise_if_failed(outcome: RunOutcome, spec: AASpec, phase: str) -> None:
    """Raise the error that stopped a phase; non-finite frames as one line naming the step."""
    if isinstance(outcome.error, UnstableSimulationError):
        raise ValueError(
            f"{type(spec).__name__} simulation became non-finite at {phase} step "
            f"{outcome.error.step}; use a smaller timestep (now {spec.timestep} ps) or a longer "
            "equilibration"
        )
    if outcome.error is not None:
        raise outcome.error


def _npt(
    nvt: app.Simulation,
    built: BuiltSystem,
    spec: AASpec,
    out_dir: Path,
    progress: bool,
) -> tuple[app.Simulation, tuple[float, float]]:
    """Run the NPT phase from ``nvt``'s state; return an NVT Simulation at the mean NPT volume
    and the (mean, std) density of the phase's second half, g/cm^3."""
    seeds = _seeds(spec)
    npt_system = openmm.XmlSerializer.clone(built.system)
    barostat = openmm.MonteCarloBarostat(
        spec.pressure * unit.bar, spec.temperature * unit.kelvin, spec.barostat_interval
    )
    barostat.setRandomNumberSeed(openmm_seed(seeds[2]))
    npt_system.addForce(barostat)
    simulation = _simulation(npt_system, built.topology, spec, seeds[0])
    state = nvt.context.getState(positions=True, velocities=True)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    start(simulation, state.getPositions(), box=box, velocities=state.getVelocities())
    del nvt

    mass = sum(
        built.system.getParticleMass(i).value_in_unit(unit.dalton)
        for i in range(built.system.getNumParticles())
    )
    rows: list[tuple[float, float, float]] = []
    bar = ProgressReporter(
        spec.save_interval, spec.npt_steps, "NPT equilibration", enabled=progress
    )

    def record(simulation: app.Simulation, state: openmm.State) -> None:
        volume = state.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)
        rows.append((simulation.currentStep * spec.timestep, volume, density(mass, volume)))
        if bar.bar is not None:
            bar.bar.set_postfix(density=f"{rows[-1][2]:.4f}")

    reporters = [CallbackReporter(spec.save_interval, record), bar]
    _raise_if_failed(run(simulation, spec.npt_steps, reporters), spec, "NPT equilibration")
    if spec.npt_steps % spec.save_interval:
        record(simulation, simulation.context.getState())  # the end of the phase
    with atomic_path(out_dir / "npt.csv") as tmp, open(tmp, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["time_ps", "volume_nm3", "density_g_cm3"])
        table.writerows(rows)
    second_half = np.array(rows[len(rows) // 2 :])
    mean_volume = float(second_half[:, 1].mean())
    stats = (float(second_half[:, 2].mean()), float(second_half[:, 2].std()))
    _plot_density(np.array(rows), stats, out_dir / "npt.png")

    state = simulation.context.getState(positions=True, velocities=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    scale = (mean_volume / abs(np.linalg.det(box))) ** (1.0 / 3.0)
    masses = np.array(
        [npt_system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(positions))]
    )
    for molecule in simulation.context.getMolecules():
        atoms = np.asarray(molecule)
        weights = masses[atoms] if masses[atoms].sum() > 0 else np.ones(len(atoms))
        centre = np.average(positions[atoms], axis=0, weights=weights)
        positions[atoms] += centre * (scale - 1.0)
    nvt = _simulation(built.system, built.topology, spec, seeds[0] + 1)
    start(nvt, positions, box=box * scale, velocities=state.getVelocities())
    return nvt, stats


def _plot_density(rows: np.ndarray, stats: tuple[float, float], path: Path) -> None:
    """Density along the NPT phase, with the mean and std of its second half, as a PNG."""
    figure = Figure(figsize=(5, 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(rows[:, 0], rows[:, 2], color="C0", lw=1)
    half = rows[len(rows) // 2, 0]
    mean, std = stats
    axes.axhline(mean, color="C1", lw=1, label=f"mean after {half:g} ps: {mean:.4f} +- {std:.4f}")
    axes.axhspan(mean - std, mean + std, color="C1", alpha=0.2)
    axes.set(xlabel="NPT time (ps)", ylabel="density (g/cm$^3$)")
    axes.legend(loc="lower right", fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def _snapshot(
    state: openmm.State,
    real: np.ndarray,
    masses: np.ndarray,
    types: np.ndarray,
    type_names: list[str],
) -> Frames:
    """The positions, forces and box of the real atoms in ``state`` as one frame."""
    return Frames(
        positions=state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None, real],
        forces=state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT)[None, real],
        boxes=state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)[None],
        times=np.array([state.getTime().value_in_unit(unit.picosecond)]),
        masses=masses,
        types=types,
        type_names=type_names,
    )


def _real_constraints(system: openmm.System, real: np.ndarray) -> np.ndarray:
    """Constrained pairs, numbered among the real (non-virtual-site) particles."""
    index = np.full(system.getNumParticles(), -1)
    index[real] = np.arange(len(real))
    pairs = np.array(
        [system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())],
        dtype=np.int64,
    ).reshape(-1, 2)
    return index[pairs]


def _write_topology(
    topology: app.Topology, real: np.ndarray, positions: np.ndarray, box: np.ndarray, out_dir: Path
) -> Path:
    """PDB of the real atoms at ``positions`` (nm) with the box and every bond as CONECT records
    (OpenMM's writer leaves out bonds within standard residues, such as water's O-H)."""
    modeller = app.Modeller(topology, np.zeros((topology.getNumAtoms(), 3)) * unit.nanometer)
    keep = set(real.tolist())
    modeller.delete([atom for atom in topology.atoms() if atom.index not in keep])
    modeller.topology.setPeriodicBoxVectors(box * unit.nanometer)
    text = io.StringIO()
    app.PDBFile.writeFile(modeller.topology, positions * unit.nanometer, text)
    lines = [
        line for line in text.getvalue().splitlines() if line != "END" and line[:6] != "CONECT"
    ]
    serials = [line[6:11] for line in lines if line[:6] in ("ATOM  ", "HETATM")]
    partners: dict[int, list[int]] = {}
    for bond in modeller.topology.bonds():
        i, j = bond.atom1.index, bond.atom2.index
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    for i in sorted(partners):
        for first in range(0, len(partners[i]), 4):
            bonded = "".join(serials[j] for j in partners[i][first : first + 4])
            lines.append(f"CONECT{serials[i]}{bonded}")
    path = out_dir / "aa_topology.pdb"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([*lines, "END", ""]))
    return path
