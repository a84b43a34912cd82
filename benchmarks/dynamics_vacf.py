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
from dataclasses import replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cgkd.config import compose, to_settings
from cgkd.io.h5md import H5MDReader, read_h5md_bonds
from cgkd.observables import MSD, VACF, Trajectory
from cgkd.simulation.dense import SPACING, load_segment, record_dense
from cgkd.simulation.engine import start
from cgkd.simulation.friction import decay_time
from cgkd.simulation.md import MDSettings, cg_simulation, model_file
from cgkd.stages import Pipeline, Request
from cgkd.stages.simulate import model_files

REPO = Path(__file__).resolve().parents[1]
#: The longest VACF lag (ps) and the MSD's lag range (ps) for its diffusion fit.
VACF_LAG, MSD_LAG, MSD_FIT = 1.0, 4.0, (1.0, 4.0)


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
    return record_dense(
        simulation,
        settings.timestep,
        picoseconds,
        name=name,
        types=last.types,
        type_names=list(last.type_names),
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
    cg = pipeline.run("map")
    steps = round(args.picoseconds / cfg.simulate.timestep)
    dense = Pipeline(compose([*matched, f"simulate.calibration_steps={steps}"]))
    aa = load_segment(Path(dense.run("segment")["segment"]), "AA (mapped)")
    student = pipeline.run("student")
    langevin = pipeline.run(Request("calibrate", "student"))["frictions"]
    dpd = Pipeline(compose([*matched, "simulate.integrator=dpd"]))
    dpd_frictions = dpd.run(Request("calibrate", "student"))["frictions"]
    by_vacf = Pipeline(compose([*matched, "simulate.calibration_target=vacf"]))
    vacf_frictions = by_vacf.run(Request("calibrate", "student"))["frictions"]
    base = to_settings(cfg.simulate, seed=args.seed)
    path = model_file(*model_files("student", student), base)
    frictions = {"Langevin": langevin, "Langevin (VACF)": vacf_frictions, "DPD": dpd_frictions}
    print(f"frictions: {frictions}", flush=True)

    sources = {"AA (mapped)": aa}
    for label, thermostat in {
        "student, Langevin 1/ps": {"friction": 1.0, "frictions": None},
        "student, Langevin matched": {"frictions": langevin},
        "student, Langevin matched to the VACF": {"frictions": vacf_frictions},
        "student, DPD matched": {"integrator": "dpd", "frictions": dpd_frictions},
    }.items():
        sources[label] = cg_segment(path, cg, base, args.picoseconds, label, **thermostat)
        print(f"{label}: done", flush=True)
    write(sources, frictions, args)


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
            f"| {v.attrs['D_green_kubo']:.4f} | {decay_time(v):.3f} "
            f"| {v.x[minimum]:.2f} | {v.y[minimum]:.3f} "
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
        f"Green-Kubo D (the VACF integrated to {VACF_LAG:g} ps), the time the VACF takes to "
        "fall to 1/e, its first minimum, and "
        "the MSD at 0.1 ps (the ballistic-to-caged crossover) with its ratio to AA.",
        "",
        "| source | D (nm²/ps) | D ratio | D Green-Kubo (nm²/ps) | VACF 1/e time (ps) "
        "| VACF min. at (ps) | VACF min. | MSD(0.1 ps) (nm²) | MSD(0.1 ps) ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "![VACF and MSD](vacf.png)",
    ]
    (args.out / "vacf.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
