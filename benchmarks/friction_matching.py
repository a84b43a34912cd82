"""Dynamics with matched friction: the D ratio (CG over AA) and the structure of each model
with the default friction and with ``simulate.friction=matched``, over seeds, on one AA
reference; writes ``docs/dynamics/README.md`` with the table and the command.

    python benchmarks/friction_matching.py --seeds 0 1 2 [--work WORK] [--set KEY=VALUE ...]

Each seed's numbers are also kept in a JSON file beside the table (``--out`` with ``.json``),
with the commit that made them: a later call adds its seeds to those already there and the
table is rebuilt from all of them, so seeds measured in different sessions add up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import REPO, KeptRuns, commit, run_cgkd

from cgkd.stages import Pipeline, Request

COLUMNS = (
    ("d_ratio", "D ratio CG/AA", "{:.3f}"),
    ("rdf_mad", "RDF MAD", "{:.4f}"),
    ("adf_jsd", "ADF JSD (bits)", "{:.2e}"),
    ("tetrahedral_jsd", "tetrahedral q JSD (bits)", "{:.2e}"),
)
#: The routes by name: the directory prefix of their runs and their overrides.
ROUTES = {
    "default": ("default (1 /ps)", []),
    "matched": ("Langevin matched", ["simulate.friction=matched"]),
    "vacf": (
        "Langevin matched to the VACF",
        ["simulate.friction=matched", "simulate.calibration_target=vacf"],
    ),
    "brownian": ("Brownian matched", ["simulate.friction=matched", "simulate.integrator=brownian"]),
    "dpd": ("DPD matched", ["simulate.friction=matched", "simulate.integrator=dpd"]),
}


def cell(values: list[float], fmt: str) -> str:
    """mean ± sample std over seeds."""
    array = np.asarray(values, dtype=float)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{fmt.format(array.mean())} ± {fmt.format(spread)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=["default", "matched"])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "friction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--title", default="water")
    parser.add_argument("--prefix", default="", help="before each run directory's name")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dynamics" / "README.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows_file = args.out.with_suffix(".json")
    kept = KeptRuns(rows_file, ("seed", "route"))
    for seed in args.seeds:
        for route in args.routes:
            label, extra = ROUTES[route]
            out = args.work / f"{args.prefix}{route}_{seed}"
            common = [f"seed={seed}", "data_seed=0", "progress=false", f"threads={args.threads}"]
            run_cgkd(
                ["run", *common, *extra, *args.set, f"hydra.run.dir={out}"],
                args.work,
                args.threads,
                f"{label}, seed {seed}",
            )
            calibration = calibration_times(args.work, out)
            kept.keep(seed_entry(out, seed, route, commit(), calibration))
            kept.save()
    entries = sorted(
        (e for e in kept.entries if e["route"] in args.routes), key=lambda e: e["seed"]
    )
    results: dict[tuple[str, str], list[dict]] = {}
    by_type: dict[tuple[str, str, str], list[float]] = {}
    frictions: dict[tuple[str, str, str], list[float]] = {}
    calibration_minutes: list[tuple[str, float]] = []
    for entry in sorted(entries, key=lambda e: args.routes.index(e["route"])):
        label = ROUTES[entry["route"]][0]
        for model, row in entry["models"].items():
            results.setdefault((label, model), []).append(row)
            for kind, ratio in entry["d_ratio_by_type"][model].items():
                by_type.setdefault((label, model, kind), []).append(ratio)
            for kind, value in entry["frictions"][model].items():
                frictions.setdefault((label, model, kind), []).append(value)
        calibration_minutes += [tuple(pair) for pair in entry["calibration_minutes"]]
    seeds = sorted({e["seed"] for e in entries})
    commits = sorted({e["commit"] for e in entries})
    command = f"python benchmarks/friction_matching.py --seeds {' '.join(map(str, seeds))}"
    out = args.out.resolve()
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    command += f" --routes {' '.join(args.routes)} --title '{args.title}' --out {shown}"
    command += f" --prefix {args.prefix}" if args.prefix else ""
    command += f" --set {' '.join(args.set)}" if args.set else ""
    lines = [
        f"# Matched friction: {args.title}",
        "",
        f"Regenerate: `{command}` (every run `cgkd run` with `data_seed=0`, one AA reference;",
        f"the default settings otherwise), at {', '.join(commits)}. Mean ± sample std over",
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}); each seed's numbers are in",
        f"`{rows_file.name}`.",
        "",
        "| friction | model | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for (route, model), rows in results.items():
        cells = [
            cell([r[key] for r in rows], fmt) if all(key in r for r in rows) else "n/a"
            for key, _, fmt in COLUMNS
        ]
        lines.append(f"| {route} | {model} | " + " | ".join(cells) + " |")
    if by_type:
        lines += ["", "D ratio CG/AA of each bead type:", ""]
        lines += ["| friction | model | bead type | D ratio |", "|---|---|---|---:|"]
        lines += [
            f"| {route} | {model} | {kind} | {cell(values, '{:.3f}')} |"
            for (route, model, kind), values in by_type.items()
        ]
    lines += ["", "Fitted frictions (1/ps):", ""]
    lines += ["| friction | model | bead type | friction |", "|---|---|---|---:|"]
    lines += [
        f"| {route} | {model} | {kind} | {cell(values, '{:.3g}')} |"
        for (route, model, kind), values in frictions.items()
    ]
    per_model = [minutes for stage, minutes in calibration_minutes if stage == "calibrate"]
    if per_model:
        lines += [
            "",
            f"The calibrate stage took {min(per_model):.1f}-{max(per_model):.1f} min per model "
            "(from its record).",
        ]
    if segments := [minutes for stage, minutes in calibration_minutes if stage == "segment"]:
        lines[-1] += f" The dense AA segment took {min(segments):.1f}-{max(segments):.1f} min."
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


def seed_entry(
    run: Path, seed: int, route: str, revision: str, calibration: list[tuple[str, float]]
) -> dict:
    """One seed's numbers for one route, read from the ``run`` directory's result and
    metrics: each model's table row, D ratio per bead type and fitted frictions."""
    line = json.loads((run / "result.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    by_type: dict[str, dict[str, float]] = {model: {} for model in line["models"]}
    for name, sources in metrics["observables"].items():
        if name.startswith("msd "):
            for model in line["models"]:
                if model in sources:
                    by_type[model][name.removeprefix("msd ")] = sources[model]["D ratio"]
    return {
        "seed": seed,
        "route": route,
        "commit": revision,
        "models": line["models"],
        "d_ratio_by_type": by_type,
        "frictions": {
            model: metrics["stability"][model].get("frictions") or {} for model in line["models"]
        },
        "calibration_minutes": calibration,
    }


def calibration_times(work: Path, run: Path) -> list[tuple[str, float]]:
    """(stage, minutes) of each calibrate stage of the ``run`` directory, and of the segment
    stage of a VACF target (from the stage records; empty without friction matching)."""
    cwd = Path.cwd()
    os.chdir(work)  # the run's cache_dir is relative to it
    try:
        cfg = OmegaConf.load(run / "config.yaml")
        pipeline = Pipeline(cfg)
        if cfg.simulate.friction != "matched":
            return []
        requests = [Request("calibrate", model) for model in cfg.simulate.models]
        if cfg.simulate.calibration_target != "msd":
            requests.append(Request("segment"))
        minutes = []
        for request in requests:
            plan = pipeline.plan(request)
            record = json.loads(
                (Path(cfg.cache_dir) / plan.directory_name / "done.json").read_text()
            )
            if "seconds" in record:  # older records did not time the build
                minutes.append((request.stage, record["seconds"] / 60.0))
        return minutes
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    main()
