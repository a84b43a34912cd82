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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from matplotlib.figure import Figure
from openmm import app, unit
from tqdm.auto import tqdm

from cgkd.io.atomic import atomic_path
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDWriter
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
    the density of the production box.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record (paths as strings)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def prepare(spec: AASpec) -> tuple[openmm.Context, openmm.Integrator, BuiltSystem]:
    """Build ``spec`` into an NVT Langevin Context, minimised, with velocities at temperature."""
    built = spec.build()
    seeds = np.random.default_rng(spec.seed).integers(1, 2**31 - 1, 3)
    context, integrator = _context(built.system, spec, int(seeds[0]))
    context.setPositions(built.positions)
    context.computeVirtualSites()
    openmm.LocalEnergyMinimizer.minimize(context, _MINIMISE_TOLERANCE, _MINIMISE_MAX_ITERATIONS)
    context.setVelocitiesToTemperature(spec.temperature * unit.kelvin, int(seeds[1]))
    return context, integrator, built


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
    context, integrator, built = prepare(spec)
    system = built.system
    npt_density: tuple[float, float] | None = None
    if spec.npt_steps > 0:
        context, integrator, npt_density = _npt(context, built, spec, out_dir, progress)
    _advance(
        integrator, spec.equilibration_steps, spec.save_interval, "NVT equilibration", progress
    )

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
    context.setTime(0.0)
    context.setStepCount(0)
    n_frames = spec.production_steps // spec.save_interval
    start = time.perf_counter()
    with H5MDWriter(
        out_dir / "aa.h5md",
        masses=masses,
        types=types,
        type_names=type_names,
        config=record,
        constraints=_real_constraints(system, real),
    ) as writer:
        for _ in tqdm(range(n_frames), desc="production", unit="frame", disable=not progress):
            integrator.step(spec.save_interval)
            frame, step = _snapshot(context, real, masses, types, type_names)
            if not (np.isfinite(frame.positions).all() and np.isfinite(frame.forces).all()):
                raise ValueError(
                    f"{type(spec).__name__} simulation became non-finite at production step "
                    f"{step}; use a smaller timestep (now {spec.timestep} ps) or a longer "
                    "equilibration"
                )
            writer.append(frame, steps=np.array([step]))
        speed = ns_per_day(
            n_frames * spec.save_interval * spec.timestep, time.perf_counter() - start
        )
        writer.config["ns_per_day"] = speed
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
    )


def density(mass_amu: float, volume_nm3: float) -> float:
    """Mass density in g/cm^3 of ``mass_amu`` in ``volume_nm3``."""
    return float(mass_amu / AVOGADRO / (volume_nm3 / NM3_PER_CM3))


def _context(
    system: openmm.System, spec: AASpec, seed: int
) -> tuple[openmm.Context, openmm.Integrator]:
    integrator = openmm.LangevinMiddleIntegrator(
        spec.temperature * unit.kelvin,
        spec.friction / unit.picosecond,
        spec.timestep * unit.picosecond,
    )
    integrator.setRandomNumberSeed(seed)
    platform, properties = _platform(spec)
    return openmm.Context(system, integrator, platform, properties), integrator


def _platform(spec: AASpec) -> tuple[openmm.Platform, dict[str, str]]:
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


def _npt(
    nvt_context: openmm.Context,
    built: BuiltSystem,
    spec: AASpec,
    out_dir: Path,
    progress: bool,
) -> tuple[openmm.Context, openmm.Integrator, tuple[float, float]]:
    """Run the NPT phase; return an NVT context at the mean NPT volume and (density, std)."""
    seeds = np.random.default_rng(spec.seed).integers(1, 2**31 - 1, 3)
    npt_system = openmm.XmlSerializer.clone(built.system)
    barostat = openmm.MonteCarloBarostat(
        spec.pressure * unit.bar, spec.temperature * unit.kelvin, spec.barostat_interval
    )
    barostat.setRandomNumberSeed(int(seeds[2]))
    npt_system.addForce(barostat)
    context, integrator = _context(npt_system, spec, int(seeds[0]))
    state = nvt_context.getState(positions=True, velocities=True)
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())

    mass = sum(
        built.system.getParticleMass(i).value_in_unit(unit.dalton)
        for i in range(built.system.getNumParticles())
    )
    rows = []
    sample = spec.save_interval
    with tqdm(
        total=spec.npt_steps, desc="NPT equilibration", unit="step", disable=not progress
    ) as bar:
        done = 0
        while done < spec.npt_steps:
            todo = min(sample, spec.npt_steps - done)
            integrator.step(todo)
            done += todo
            bar.update(todo)
            volume = context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)
            rows.append((done * spec.timestep, volume, density(mass, volume)))
            bar.set_postfix(density=f"{rows[-1][2]:.4f}")
    with atomic_path(out_dir / "npt.csv") as tmp, open(tmp, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["time_ps", "volume_nm3", "density_g_cm3"])
        table.writerows(rows)
    second_half = np.array(rows[len(rows) // 2 :])
    mean_volume = float(second_half[:, 1].mean())
    stats = (float(second_half[:, 2].mean()), float(second_half[:, 2].std()))
    _plot_density(np.array(rows), stats, out_dir / "npt.png")

    state = context.getState(positions=True, velocities=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    scale = (mean_volume / abs(np.linalg.det(box))) ** (1.0 / 3.0)
    masses = np.array(
        [npt_system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(positions))]
    )
    for molecule in context.getMolecules():
        atoms = np.asarray(molecule)
        weights = masses[atoms] if masses[atoms].sum() > 0 else np.ones(len(atoms))
        centre = np.average(positions[atoms], axis=0, weights=weights)
        positions[atoms] += centre * (scale - 1.0)
    nvt, nvt_integrator = _context(built.system, spec, int(seeds[0]) + 1)
    nvt.setPeriodicBoxVectors(*(box * scale))
    nvt.setPositions(positions)
    nvt.computeVirtualSites()
    nvt.setVelocities(state.getVelocities())
    return nvt, nvt_integrator, stats


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


def _advance(
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


def _snapshot(
    context: openmm.Context,
    real: np.ndarray,
    masses: np.ndarray,
    types: np.ndarray,
    type_names: list[str],
) -> tuple[Frames, int]:
    """The current positions, forces and box of the real atoms as one frame, and the step."""
    state = context.getState(positions=True, forces=True, enforcePeriodicBox=True)
    frame = Frames(
        positions=state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None, real],
        forces=state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT)[None, real],
        boxes=state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)[None],
        times=np.array([state.getTime().value_in_unit(unit.picosecond)]),
        masses=masses,
        types=types,
        type_names=type_names,
    )
    return frame, state.getStepCount()


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
        for start in range(0, len(partners[i]), 4):
            bonded = "".join(serials[j] for j in partners[i][start : start + 4])
            lines.append(f"CONECT{serials[i]}{bonded}")
    path = out_dir / "aa_topology.pdb"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([*lines, "END", ""]))
    return path
