"""AA versus CG MD speed on this machine, measured side by side in one run.

usage: python benchmarks/md_speed.py [--cache cache] [--molecules 300] [--steps 500]

AA: the TIP3P box of the default system (PME, 2 fs, rigid water) in OpenMM.
CG: the models of the newest finished `teach` and `student`/`baseline` stages under
--cache, exported to TorchScript and run as an openmmtorch TorchForce on the mapped box.
Prints ms/step and ns/day for each and the ratio to the AA run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cgkd.io.h5md import read_h5md
from cgkd.simulation.md import MDSettings, run_cg_md, time_force_evaluation
from cgkd.systems.reference_md import prepare
from cgkd.systems.water import WaterBoxSpec
from cgkd.units import ns_per_day


def newest(cache: Path, pattern: str) -> Path:
    """The newest finished stage directory matching ``pattern``."""
    done = sorted(cache.glob(f"{pattern}/done.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no finished {pattern} stage under {cache}; run `cgkd run` first")
    return done[-1].parent


def aa_speed(molecules: int, steps: int) -> tuple[float, float]:
    """(ms/step, ns/day) of the AA water box."""
    spec = WaterBoxSpec(n_molecules=molecules, equilibration=0.0, production=1.0)
    context, integrator, _ = prepare(spec)
    integrator.step(50)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)
    wall = time.perf_counter() - start
    return 1000 * wall / steps, ns_per_day(steps * spec.timestep, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--molecules", type=int, default=300)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()

    frames = read_h5md(newest(args.cache, "map-*") / "cg.h5md")
    x, box, masses = frames.positions[-1], frames.boxes[-1], frames.masses
    teach = newest(args.cache, "teach-*")
    models = {
        "teacher (single)": teach / "teacher_0.ts",
        "teacher ensemble": teach / "ensemble.ts",
        "student": newest(args.cache, "student-*") / "student.ts",
        "baseline": newest(args.cache, "baseline-*") / "baseline.ts",
    }
    aa_ms, aa_ns = aa_speed(args.molecules, args.steps)
    rows = [("AA TIP3P, PME", args.molecules * 3, float("nan"), aa_ms, aa_ns)]
    settings = MDSettings(steps=args.steps, report_interval=args.steps, minimize=False)
    for name, path in models.items():
        force_ms = time_force_evaluation(path, x, box, masses, repeats=20)
        out = Path("/tmp") / f"cgkd-bench-{name.replace(' ', '_')}"
        run = run_cg_md(path, x, box, masses, settings, out, progress=False)
        rows.append((f"CG {name}", len(masses), force_ms, run.ms_per_step, run.ns_per_day))
    print(
        f"{'system':24s} {'particles':>9s} {'force ms':>9s} {'ms/step':>8s} {'ns/day':>8s} "
        f"{'vs AA':>6s}"
    )
    for name, particles, force_ms, ms, ns in rows:
        print(f"{name:24s} {particles:9d} {force_ms:9.2f} {ms:8.2f} {ns:8.1f} {ns / aa_ns:6.2f}")
    print("(CG and AA both at a 2 fs time step; 'vs AA' is the ns/day ratio)")


if __name__ == "__main__":
    main()
