"""The benchmark scripts' way to run ``cgkd``: a subprocess in a work directory (where its
``cache/`` lives) with ``threads`` OpenMP threads, echoed and timed; the long AA references
of the fidelity benchmarks; and the JSON files that keep each run's numbers, so that runs
made in different sessions add up."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from cgkd.io.h5md import read_h5md
from cgkd.results import ModelResult
from cgkd.simulation.md import model_forces
from cgkd.stages.base import Context, Request
from cgkd.stages.data import reference_splits
from cgkd.stages.runner import Pipeline
from cgkd.summary import SummaryRow, write_summary

REPO = Path(__file__).resolve().parents[1]

#: The long AA references of the fidelity benchmarks (issue 23), as ``cgkd`` overrides:
#: water 1 ns saved every 1 ps (1000 frames); reline, choline in two beads, 500 ps saved
#: every 1 ps (500 frames: reline is viscous, closer frames add little). Every run uses
#: ``data_seed=0``: one reference per system.
LONG_REFERENCES = {
    "water": ["system.production=1000", "system.save_interval=500"],
    "reline": [
        "experiment=reline",
        "mapping=reline_multibead",
        "system.production=500",
        "system.save_interval=500",
    ],
}


def add_run_options(parser: argparse.ArgumentParser, name: str, seeds: list[int]) -> None:
    """The options every fidelity benchmark takes: --seeds, --work (its stage cache, by
    default ``benchmarks/work/<name>``), --threads and --set (extra overrides, last)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / name)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")


def run_cgkd(args: list[str], work: Path, threads: int, label: str) -> None:
    """``cgkd <args>`` in ``work``; raises if it fails; prints the command and its minutes."""
    command = [sys.executable, "-m", "cgkd.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print(" ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True)
    print(f"{label} took {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def commit() -> str:
    """The repository's short commit hash, recorded with every kept run."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


class KeptRuns:
    """A JSON list of per-run entries (plain dicts), each identified by the values of
    ``identity`` (e.g. seed and route): :meth:`keep` replaces an entry of the same identity,
    :meth:`save` writes the file, so a later call adds to what earlier calls measured."""

    def __init__(self, path: Path, identity: tuple[str, ...]) -> None:
        self.path = path
        self.identity = identity
        self.entries: list[dict] = json.loads(path.read_text()) if path.exists() else []

    def keep(self, entry: dict) -> None:
        """Add ``entry``, dropping a kept one with the same identity."""
        same = tuple(entry[name] for name in self.identity)
        self.entries = [
            e for e in self.entries if tuple(e.get(name) for name in self.identity) != same
        ]
        self.entries.append(entry)

    def save(self) -> None:
        """Write the entries (one per line's object, indented)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.entries, indent=1) + "\n")


@dataclass(frozen=True)
class Run:
    """One ``cgkd run`` of a seed in a fidelity benchmark: its overrides, the models it
    simulates and its CG MD steps."""

    overrides: tuple[str, ...]
    models: tuple[str, ...]
    steps: int


def run_and_keep(
    reference: Sequence[str],
    runs: dict[str, Run],
    seeds: list[int],
    work: Path,
    threads: int,
    extra: list[str],
    kept: KeptRuns,
) -> None:
    """Each run of each seed on the AA reference that the ``reference`` overrides select
    (e.g. :data:`LONG_REFERENCES`, or ``input.*`` for a file; ``data_seed=0``), in
    :func:`run_directory` (the stage cache in ``work`` shared), with ``extra`` overrides
    last; keeps each run's result line with its seed, run name, CG MD length (ps) and the
    commit, saving after every run."""
    work.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for name, run in runs.items():
            directory = run_directory(work, kept, name, seed)
            settings = [
                *reference,
                *run.overrides,
                f"seed={seed}",
                "data_seed=0",
                f"simulate.models=[{','.join(run.models)}]",
                f"simulate.steps={run.steps}",
                "simulate.report_interval=200",
                f"threads={threads}",
                "progress=false",
                *extra,
                f"hydra.run.dir={directory}",
            ]
            run_cgkd(["run", *settings], work, threads, f"{name}, seed {seed}")
            line = json.loads((directory / "result.json").read_text())
            simulate = OmegaConf.load(directory / "config.yaml").simulate
            md_ps = simulate.steps * simulate.timestep
            kept.keep({"seed": seed, "run": name, "md_ps": md_ps, "commit": commit(), **line})
            kept.save()


def run_directory(work: Path, kept: KeptRuns, run: str, seed: int) -> Path:
    """Where :func:`run_and_keep` runs ``run`` of ``seed``: in ``work``, named after the
    kept file's directory (one benchmark's runs apart from another's) and the run."""
    return work / f"{kept.path.parent.name}_{run}_{seed}"


def held_out_force_rmse(
    work: Path, run: Path, models: list[str], labels: list[str]
) -> dict[str, float]:
    """Force RMSE (kJ/mol/nm) of each simulated model of the ``cgkd run`` in ``run`` (its
    exported file, evaluated in OpenMM) on its seed's held-out test frames, against the
    mapped forces of the same frames under ``labels`` (overrides of the run's config, e.g.
    ``mapping.force_map=optimal``: cleaner labels). Every stage must be cached in ``work``."""
    cfg = OmegaConf.load(run / "config.yaml")
    clean = cfg.copy()
    for override in labels:
        key, value = override.split("=", 1)
        OmegaConf.update(clean, key, value)
    here = Path.cwd()
    os.chdir(work)  # the stage cache and its recorded paths are relative to work
    try:
        own, other = Pipeline(cfg), Pipeline(clean)
        dataset = cached_record(other, Request("map"))["dataset"]
        frames = read_h5md(dataset)
        if not np.allclose(
            read_h5md(cached_record(own, Request("map"))["dataset"]).positions, frames.positions
        ):
            raise ValueError(f"{dataset} maps other bead positions than {run}'s dataset")
        test = reference_splits(Context.unchecked(cfg), len(frames.positions)).test
        errors = {}
        for name in models:
            path = Path(cached_record(own, Request("simulate", name))["model_file"])
            forces = model_forces(path, frames.positions[test], frames.boxes[test], frames.masses)
            errors[name] = float(np.sqrt(np.mean((forces - frames.forces[test]) ** 2)))
        return errors
    finally:
        os.chdir(here)


def cached_record(pipeline: Pipeline, request: Request) -> dict:
    """The record of a cached stage; raises (never builds) when it is not cached."""
    plan = pipeline.plan(request)
    done = Path(pipeline.cfg.cache_dir) / plan.directory_name / "done.json"
    if not done.is_file():
        raise FileNotFoundError(f"{done} is missing: run the benchmark's cgkd runs first")
    return json.loads(done.read_text())


def write_table(
    entries: list[dict], labels: dict[tuple[str, str], str], out: Path, title: str, note: str
) -> Path:
    """``summary.md``/``.json``/``.png`` in ``out`` from kept runs: one row per (run, model)
    named in ``labels`` (in its order), its CG MD length after the name, mean ± std over
    the seeds; ``note`` (the command, the commits) under the title. Returns the markdown."""
    rows: dict[tuple[str, str], SummaryRow] = {}
    lengths: dict[tuple[str, str], set[float]] = {}
    for entry in sorted(entries, key=lambda e: e["seed"]):
        for model, values in entry["models"].items():
            key = (entry["run"], model)
            if key not in labels:
                continue
            row = rows.setdefault(key, SummaryRow(labels[key], model))
            row.add(entry["seed"], ModelResult.from_json(values))
            lengths.setdefault(key, set()).add(round(entry["md_ps"], 3))
    shown = {
        labels[key]: f"{labels[key]}, {'/'.join(f'{ps:g}' for ps in sorted(lengths[key]))} ps"
        for key in labels
        if key in rows
    }
    commits = ", ".join(sorted({e["commit"] for e in entries}))
    return write_summary(
        [rows[key] for key in labels if key in rows],
        out,
        title,
        shown,
        notes=[f"{note} At {commits}; each run's numbers: `runs.json`."],
    )


def mean_row(label: str, values: list[float], digits: int) -> str:
    """A markdown row ``| label | n | mean ± std |`` of ``values`` over seeds (no spread for
    one value), ``digits`` after the point."""
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"| {label} | {len(values)} | {statistics.mean(values):.{digits}f}{spread} |"
