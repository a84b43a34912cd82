"""Energy conservation of a trained model in NVE against the time step: the measurement the
default CG time step (conf/simulate/langevin.yaml) is chosen from.

usage: python benchmarks/nve_drift.py --model cache/student-XXXX/student.ts
           --cg cache/map-XXXX/cg.h5md [--timesteps 2 4 6 8 10] [--ps 10] [--limit 0.15]

From the last mapped frame, thermalised for 1 ps with Langevin dynamics at 1 fs (the same
state for every time step), the model runs --ps ps of velocity Verlet (NVE) at each time
step (fs). Prints the drift of the total energy (slope of a straight-line fit, per ns and
per bead, in kJ/mol and in k_B T), its RMS fluctuation about the line per bead, and the
largest time step up to which every drift stays within --limit k_B T per ns per bead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cgkd.io.h5md import read_h5md
from cgkd.simulation.drift import nve_energy_drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported model (.ts)")
    parser.add_argument("--cg", type=Path, required=True, help="the mapped dataset (cg.h5md)")
    parser.add_argument("--timesteps", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--ps", type=float, default=10.0, help="NVE length per time step")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--limit", type=float, default=0.15, help="k_B T per ns per bead")
    args = parser.parse_args()
    frames = read_h5md(args.cg)
    print(f"{args.model}: {len(frames.masses)} beads, {args.ps:g} ps of NVE per time step\n")
    print(
        "| time step (fs) | drift (kJ/mol/ns/bead) | drift (kT/ns/bead) "
        "| fluctuation (kJ/mol/bead) | finite |"
    )
    print("|---:|---:|---:|---:|---|")
    passing = []
    for fs in args.timesteps:
        dt = fs / 1000.0
        result = nve_energy_drift(
            str(args.model),
            frames.positions[-1],
            frames.boxes[-1],
            frames.masses,
            dt,
            temperature=args.temperature,
            equilibration_steps=1000,
            steps=round(args.ps / dt),
            report_interval=max(1, round(0.02 / dt)),
            platform="CPU",
        )
        print(
            f"| {fs:g} | {result.drift_per_ns_per_bead:.4f} "
            f"| {result.drift_kt_per_ns_per_bead:.4f} "
            f"| {result.fluctuation_per_bead:.5f} | {result.stable} |",
            flush=True,
        )
        passing.append(result.stable and abs(result.drift_kt_per_ns_per_bead) <= args.limit)
    steps = sorted(zip(args.timesteps, passing, strict=True))
    best = None
    for fs, ok in steps:
        if not ok:
            break
        best = fs
    print(f"\nlargest time step up to which |drift| <= {args.limit} kT/ns/bead: {best} fs")


if __name__ == "__main__":
    main()
