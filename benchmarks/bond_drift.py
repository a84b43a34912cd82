"""Whether CG MD keeps each molecule's bonds where the AA reference has them, over time: for
each kept head-to-head run of one system (``benchmarks/head_to_head.py``), the fraction of
bonded bead pairs whose length lies outside the range the AA-mapped reference visits, in
each tenth of the run. The stability check looks for clumped or escaped beads only; a model
that slowly moves its bonds to a length AA never has passes it.

    python benchmarks/bond_drift.py --system reline --work WORK [--run default]

``--work`` is the head-to-head's work directory (every stage cached there). The range of a
bond type is the 0.1-99.9 % quantiles of its lengths over the reference's frames, so the
reference itself has 0.2 % outside by construction. Writes ``bonds_RUN.md`` and
``bonds_RUN.png`` beside the head-to-head table (``docs/distillation/head_to_head/SYSTEM``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import REPO, KeptRuns, cached_record, run_directory

from cgkd.analysis import cg_runs
from cgkd.io.h5md import read_h5md, read_h5md_bonds
from cgkd.models.priors import bond_lengths
from cgkd.stages.base import Request
from cgkd.stages.runner import Pipeline

#: The quantiles of the reference's bond lengths that bound "where AA has them".
RANGE = (0.001, 0.999)
#: The parts of a run the fraction is reported for.
PARTS = 10


def outside_fraction(lengths: np.ndarray, kinds: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """[T] fraction of the bonds of each frame outside their kind's ``ranges`` [kinds, 2]."""
    low, high = ranges[kinds, 0], ranges[kinds, 1]
    return ((lengths < low) | (lengths > high)).mean(axis=1)


def drift(run: Path, work: Path, models: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """Each model's outside fraction per frame of its CG MD in the ``cgkd run`` ``run``, and
    the reference's bond ranges in words (every stage cached in ``work``)."""
    cfg = OmegaConf.load(run / "config.yaml")
    here = Path.cwd()
    os.chdir(work)  # the stage cache and its recorded paths are relative to work
    try:
        pipeline = Pipeline(cfg)
        dataset = cached_record(pipeline, Request("map"))["dataset"]
        frames, bonds = read_h5md(dataset), read_h5md_bonds(dataset)
        if not len(bonds):
            raise SystemExit(f"{dataset} has no bonds: nothing to measure for {run}")
        pair_types = np.sort(frames.types[bonds], axis=1)
        names, kinds = np.unique(pair_types, axis=0, return_inverse=True)
        reference = bond_lengths(frames.positions, frames.boxes, bonds)
        ranges = np.array([np.quantile(reference[:, kinds == k], RANGE) for k in range(len(names))])
        fractions = {}
        for model in models:
            (trajectory,) = cg_runs(cached_record(pipeline, Request("simulate", model)), frames, 1)
            read = [trajectory.frame(t) for t in range(len(trajectory))]
            positions = np.stack([frame.positions for frame in read])
            boxes = np.stack([frame.box for frame in read])
            fractions[model] = outside_fraction(
                bond_lengths(positions, boxes, bonds), kinds, ranges
            )
    finally:
        os.chdir(here)
    words = ", ".join(
        f"{frames.type_names[a]}-{frames.type_names[b]} {low:.3f}-{high:.3f} nm"
        for (a, b), (low, high) in zip(names, ranges, strict=True)
    )
    return fractions, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="reline")
    parser.add_argument("--work", type=Path, required=True, help="the head-to-head's --work")
    parser.add_argument("--run", default="default", help="which kept run of each seed")
    args = parser.parse_args()
    out = REPO / "docs" / "distillation" / "head_to_head" / args.system
    kept = KeptRuns(out / "runs.json", ("seed", "run"))
    entries = sorted((e for e in kept.entries if e["run"] == args.run), key=lambda e: e["seed"])
    if not entries:
        raise SystemExit(f"{kept.path} keeps no '{args.run}' run: run head_to_head.py first")
    results, words = {}, ""
    for entry in entries:
        run = run_directory(args.work.resolve(), kept, args.run, entry["seed"])
        results[entry["seed"]], words = drift(run, args.work.resolve(), list(entry["models"]))
        print(f"seed {entry['seed']} measured", flush=True)
    md_ps = entries[0]["md_ps"]
    header = " | ".join(f"{(i + 1) * md_ps / PARTS:g}" for i in range(PARTS))
    lines = [
        f"# Bonds outside the AA range over CG MD: {args.system}",
        "",
        f"Regenerate: `python benchmarks/bond_drift.py --system {args.system} --work WORK "
        f"--run {args.run}` (WORK: the head-to-head's). The fraction of bonded bead pairs "
        f"whose length is outside the 0.1-99.9 % quantiles of the AA-mapped reference's "
        f"({words}; the reference: 0.2 % by construction), in each tenth of the "
        f"{md_ps:g} ps run, by the time (ps) at its end.",
        "",
        f"| model | seed | {header} |",
        "|---|---:|" + "---:|" * PARTS,
    ]
    figure_name = f"bonds_{args.run}.png"
    figure, axis = plt.subplots(figsize=(6.5, 4))
    colours = {}
    for seed, fractions in results.items():
        for model, fraction in fractions.items():
            parts = [part.mean() for part in np.array_split(fraction, PARTS)]
            lines.append(f"| {model} | {seed} | " + " | ".join(f"{p:.3f}" for p in parts) + " |")
            times = np.linspace(0, md_ps, len(fraction))
            colour = colours.setdefault(model, f"C{len(colours)}")
            style = ("-", "--", ":", "-.")[seed % 4]
            axis.plot(times, fraction, colour, ls=style, lw=0.8, label=f"{model}, seed {seed}")
    axis.axhline(1 - (RANGE[1] - RANGE[0]), color="k", lw=0.5, label="AA reference")
    axis.set(xlabel="time (ps)", ylabel="fraction of bonds outside the AA range")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / figure_name, dpi=150)
    (out / f"bonds_{args.run}.md").write_text(
        "\n".join([*lines, "", f"![bonds over time]({figure_name})", ""])
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
