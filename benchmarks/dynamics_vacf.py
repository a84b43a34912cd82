"""Short-time dynamics of the student against AA: the velocity autocorrelation (VACF) and the
MSD from 10 fs to 4 ps, with the default friction, Langevin friction matched per bead type
and DPD pair friction matched the same way. The pipeline's AA reference keeps a frame every
0.2 ps, too sparse for a VACF, so this script runs its own dense segments: AA MD of the
built-in system from the reference's last frame (bead velocities = the mapping applied to
atom velocities) and CG MD of the student, each saving positions and velocities every 10 fs.
Writes ``docs/dynamics/vacf.md`` and ``vacf.png``.

    python benchmarks/dynamics_vacf.py --work WORK [--seed 0] [--picoseconds 20]

WORK is a directory outside the repository; its ``cache/`` is reused (the runs of
``benchmarks/friction_matching.py --work WORK`` share it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import openmm
from matplotlib.figure import Figure
from MDAnalysis import Universe
from omegaconf import DictConfig
from openmm import app, unit

from cgkd.config import compose, to_settings
from cgkd.io.h5md import H5MDReader, read_h5md_bonds
from cgkd.mapping import compile_mapping
from cgkd.observables import MSD, VACF, Trajectory
from cgkd.simulation.engine import create_simulation, make_integrator, run, start
from cgkd.simulation.md import MDSettings, cg_simulation, model_file
from cgkd.simulation.reporters import CallbackReporter
from cgkd.stages import Pipeline, Request
from cgkd.stages.simulate import model_files

REPO = Path(__file__).resolve().parents[1]
#: Maps a frame's [particles, 3] array to the beads' [beads, 3].
Select = Callable[[np.ndarray], np.ndarray]
#: ps between saved frames in every dense segment.
SPACING = 0.01
#: The longest VACF lag (ps) and the MSD's lag range (ps) for its diffusion fit.
VACF_LAG, MSD_LAG, MSD_FIT = 1.0, 4.0, (1.0, 4.0)


def record(
    simulation: app.Simulation,
    timestep: float,
    picoseconds: float,
    select: Select,
    **beads: object,
) -> Trajectory:
    """After 2 ps that forget the drawn velocities, run ``picoseconds`` (``timestep`` ps per
    step) and keep the positions, velocities (nm, nm/ps; ``select`` maps the [atoms, 3]
    arrays to beads) and box every :data:`SPACING` ps, as a Trajectory with the ``beads``'
    types, type names and name."""
    run(simulation, round(2.0 / timestep))
    interval = round(SPACING / timestep)
    steps = round(picoseconds / timestep) // interval * interval
    positions, velocities, boxes = [], [], []

    def keep(_simulation: app.Simulation, state: openmm.State) -> None:
        positions.append(select(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
        velocities.append(
            select(
                state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            )
        )
        boxes.append(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))

    outcome = run(
        simulation, steps, [CallbackReporter(interval, keep, ("positions", "velocities"))]
    )
    if not outcome.stable:
        raise RuntimeError(outcome.message)
    return Trajectory(
        np.array(positions), np.array(boxes), dt=SPACING, velocities=np.array(velocities), **beads
    )


def aa_segment(cfg: DictConfig, aa: dict, picoseconds: float) -> Trajectory:
    """Dense AA MD from the reference's last frame, mapped to beads."""
    spec = to_settings(cfg.system, seed=int(cfg.data_seed))
    built = spec.build()
    with H5MDReader(aa["trajectory"]) as reader:
        last = reader.read(reader.n_frames - 1)
        masses = last.masses
    real = [i for i in range(built.system.getNumParticles()) if not built.system.isVirtualSite(i)]
    if len(real) != built.system.getNumParticles():
        raise SystemExit("this script maps systems without virtual sites (e.g. TIP3P) only")
    mapping = compile_mapping(to_settings(cfg.mapping), Universe(aa["topology"]), masses)
    integrator = make_integrator(
        "langevin", spec.timestep, temperature=spec.temperature, friction=spec.friction, seed=11
    )
    simulation = create_simulation(built.system, integrator, topology=built.topology)
    start(
        simulation,
        last.positions[0],
        box=last.boxes[0],
        constraint_tolerance=1e-8,
        temperature=spec.temperature,
        seed=12,
    )
    return record(
        simulation,
        spec.timestep,
        picoseconds,
        lambda atoms: mapping.position_map @ atoms,
        types=mapping.types,
        type_names=mapping.type_names,
        name="AA (mapped)",
    )


def cg_segment(
    model: Path, cg: dict, base: MDSettings, picoseconds: float, name: str, **thermostat
) -> Trajectory:
    """Dense CG MD of ``model`` with the ``thermostat`` settings from the data's last frame."""
    with H5MDReader(cg["dataset"]) as reader:
        last = reader.read(reader.n_frames - 1)
    names = [last.type_names[t] for t in last.types]
    settings = replace(base, **thermostat)
    simulation = cg_simulation(
        model,
        last.masses,
        last.boxes[0],
        settings,
        bead_names=names,
        bonds=read_h5md_bonds(cg["dataset"]),
    )
    start(simulation, last.positions[0], temperature=settings.temperature, seed=3)
    return record(
        simulation,
        settings.timestep,
        picoseconds,
        lambda values: values,
        types=last.types,
        type_names=last.type_names,
        name=name,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--picoseconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dynamics")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)
    common = [f"seed={args.seed}", "data_seed=0", "progress=false", f"threads={args.threads}"]
    matched = [*common, "simulate.friction=matched"]
    cfg = compose(matched)
    pipeline = Pipeline(cfg)
    aa, cg = pipeline.run("generate"), pipeline.run("map")
    student = pipeline.run("student")
    langevin = pipeline.run(Request("calibrate", "student"))["frictions"]
    dpd = Pipeline(compose([*matched, "simulate.integrator=dpd"]))
    dpd_frictions = dpd.run(Request("calibrate", "student"))["frictions"]
    base = to_settings(cfg.simulate, seed=args.seed)
    path = model_file(*model_files("student", student), base)
    print(f"frictions: Langevin {langevin}, DPD {dpd_frictions}", flush=True)

    sources = {"AA (mapped)": aa_segment(cfg, aa, args.picoseconds)}
    for label, thermostat in {
        "student, Langevin 1/ps": {"friction": 1.0, "frictions": None},
        "student, Langevin matched": {"frictions": langevin},
        "student, DPD matched": {"integrator": "dpd", "frictions": dpd_frictions},
    }.items():
        sources[label] = cg_segment(path, cg, base, args.picoseconds, label, **thermostat)
        print(f"{label}: done", flush=True)
    write(sources, {"Langevin": langevin, "DPD": dpd_frictions}, args)


def write(sources: dict[str, Trajectory], frictions: dict, args: argparse.Namespace) -> None:
    """The table (markdown) and the figure of the VACF and MSD of every source."""
    vacf = {label: VACF(max_lag=VACF_LAG).run(t, n_blocks=4) for label, t in sources.items()}
    msd = {
        label: MSD(max_lag=MSD_LAG, fit_start=MSD_FIT[0], fit_stop=MSD_FIT[1]).run(t, n_blocks=4)
        for label, t in sources.items()
    }
    reference = msd["AA (mapped)"]
    rows = []
    for label in sources:
        v, m = vacf[label], msd[label]
        minimum = int(np.argmin(v.y))
        short = float(np.interp(0.1, m.x, m.y))
        rows.append(
            f"| {label} | {m.attrs['D']:.4f} ± {m.attrs['D_err']:.4f} "
            f"| {m.attrs['D'] / reference.attrs['D']:.2f} "
            f"| {v.attrs['D_green_kubo']:.4f} | {v.x[minimum]:.2f} | {v.y[minimum]:.3f} "
            f"| {short:.4f} | {short / float(np.interp(0.1, reference.x, reference.y)):.2f} |"
        )
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = figure.subplots(1, 2)
    for k, label in enumerate(sources):
        style = {"color": f"C{k}", "lw": 1.5 if k == 0 else 1.0}
        left.plot(vacf[label].x, vacf[label].y, label=label, **style)
        right.loglog(msd[label].x[1:], msd[label].y[1:], label=label, **style)
    left.axhline(0.0, color="0.6", lw=0.5)
    left.set(xlabel="t (ps)", ylabel="VACF C(t)/C(0)", xlim=(0, VACF_LAG))
    right.set(xlabel="t (ps)", ylabel="MSD (nm²)")
    left.legend(fontsize="small")
    args.out.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out / "vacf.png", dpi=120)
    command = f"python benchmarks/dynamics_vacf.py --work WORK --seed {args.seed}"
    lines = [
        "# Short-time dynamics: VACF and MSD",
        "",
        f"Regenerate: `{command} --picoseconds {args.picoseconds:g}` (default settings, "
        f"`data_seed=0`, seed {args.seed}). Each source is a dense segment of "
        f"{args.picoseconds:g} ps saved every {SPACING * 1000:g} fs, after 2 ps of "
        "equilibration: AA MD of the built-in water from the reference's last frame (its "
        "molecules' centres of mass and their velocities) and CG MD of the student.",
        "",
        "Fitted frictions (1/ps): "
        + "; ".join(
            f"{kind} " + ", ".join(f"{t} {g:.3g}" for t, g in values.items())
            for kind, values in frictions.items()
        )
        + ".",
        "",
        f"D from the MSD fitted over {MSD_FIT[0]:g}-{MSD_FIT[1]:g} ps (± over 4 blocks), the "
        f"Green-Kubo D (the VACF integrated to {VACF_LAG:g} ps), the VACF's first minimum, and "
        "the MSD at 0.1 ps (the ballistic-to-caged crossover) with its ratio to AA.",
        "",
        "| source | D (nm²/ps) | D ratio | D Green-Kubo (nm²/ps) | VACF min. at (ps) "
        "| VACF min. | MSD(0.1 ps) (nm²) | MSD(0.1 ps) ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "![VACF and MSD](vacf.png)",
    ]
    (args.out / "vacf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
