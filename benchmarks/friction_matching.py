"""Dynamics with matched friction: the D ratio (CG over AA) and the structure of each model
with the default friction and with ``simulate.friction=matched``, over seeds, on one AA
reference; writes ``docs/dynamics/README.md`` with the table and the command.

    python benchmarks/friction_matching.py --seeds 0 1 2 [--work WORK] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import run_cgkd

REPO = Path(__file__).resolve().parents[1]
COLUMNS = (
    ("d_ratio", "D ratio CG/AA", "{:.3f}"),
    ("rdf_mad", "RDF MAD", "{:.4f}"),
    ("adf_jsd", "ADF JSD (bits)", "{:.2e}"),
    ("tetrahedral_jsd", "tetrahedral q JSD (bits)", "{:.2e}"),
)
ROUTES = {"default (1 /ps)": [], "matched": ["simulate.friction=matched"]}


def cell(values: list[float], fmt: str) -> str:
    """mean ± sample std over seeds."""
    array = np.asarray(values, dtype=float)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{fmt.format(array.mean())} ± {fmt.format(spread)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "friction")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dynamics" / "README.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], list[dict]] = {}
    frictions: dict[str, list[float]] = {}
    for seed in args.seeds:
        for route, extra in ROUTES.items():
            out = args.work / f"{'matched' if extra else 'default'}_{seed}"
            common = [f"seed={seed}", "data_seed=0", "progress=false", f"threads={args.threads}"]
            run_cgkd(
                ["run", *common, *extra, *args.set, f"hydra.run.dir={out}"],
                args.work,
                args.threads,
                f"{route}, seed {seed}",
            )
            line = json.loads((out / "result.json").read_text())
            metrics = json.loads((out / "metrics.json").read_text())
            for model, row in line["models"].items():
                results.setdefault((route, model), []).append(row)
                fitted = metrics["stability"][model].get("frictions") or {}
                for kind, value in fitted.items():
                    frictions.setdefault(f"{model} {kind}", []).append(value)
    command = "python benchmarks/friction_matching.py --seeds " + " ".join(map(str, args.seeds))
    command += f" --set {' '.join(args.set)}" if args.set else ""
    lines = [
        "# Dynamics: friction matched to the AA diffusion",
        "",
        f"Regenerate: `{command}` (every run `cgkd run` with `data_seed=0`, one AA reference;",
        f"the default settings otherwise). Mean ± sample std over the seeds ({len(args.seeds)}).",
        "",
        "| friction | model | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for (route, model), rows in results.items():
        cells = [cell([r[key] for r in rows], fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {route} | {model} | " + " | ".join(cells) + " |")
    lines += ["", "Fitted frictions (1/ps):", "", "| model, bead type | friction |", "|---|---:|"]
    lines += [f"| {name} | {cell(values, '{:.2f}')} |" for name, values in frictions.items()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
