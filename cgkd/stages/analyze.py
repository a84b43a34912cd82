"""Observables and metrics of every simulated model against the AA reference (``analyze``).

The stage measures (observables, deviations, held-out force errors, stability, timings) and
caches the numbers: ``metrics.json`` (a :class:`~cgkd.results.RunResult` without the run's
facts), ``observables.json`` and ``histories.json``. Rendering them with the run's facts
(report.md, figures, result.json) into a run's output directory is :func:`cgkd.report.render`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cgkd.analysis import AnalysisSettings, StageRecords, compute
from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md_bonds
from cgkd.observables.sources import save_curves
from cgkd.results import CURVES_FILE, METRICS_FILE, TRAINED_MODELS
from cgkd.simulation.md import MDSettings, model_file, time_force_evaluation
from cgkd.stages.base import Context, Record, Request, Stage, write_json
from cgkd.stages.data import dataset
from cgkd.stages.distill import schedule
from cgkd.stages.reference import reference_request
from cgkd.stages.simulate import model_files, model_request, simulated_models

#: The loss curves of the trained models and ensemble members.
HISTORIES_FILE = "histories.json"


def _uses_teacher(context: Context, names: set[str]) -> bool:
    """Whether the run reports the teacher: with the student or the teachers simulated, or
    the baseline in the two-stage schedule (its hard frames are screened with the teacher).
    A run of the baseline, the refined or the classical model alone reports no teacher (the
    refined student's teacher trains, upstream of it, but is not compared)."""
    if names - {"baseline", "refined", "classical"}:
        return True
    return "baseline" in names and schedule(context) == "two_stage"


def _needs(context: Context) -> dict[str, Request]:
    names, source = simulated_models(context), context("teacher.source")
    needs = {"aa": reference_request(context), "cg": Request("map")}
    teacher = _uses_teacher(context, set(names))
    if teacher and source == "ensemble":
        needs["teach"] = Request("teach")
    elif teacher and source == "torchscript":
        needs["teacher"] = Request("teacher")
    for name in names:
        needs[f"simulate_{name}"] = Request("simulate", name)
        if name in TRAINED_MODELS:
            needs[name] = model_request(name, source)
    if teacher and {"student", "baseline"} & set(names):
        two_stage = schedule(context) == "two_stage"
        needs["targets"] = Request("sample") if two_stage else Request("label")
        if two_stage and "student" in names:
            needs["soft_student"] = Request("soft_student")
    return needs


def _records(context: Context) -> StageRecords:
    """The upstream records as the analysis takes them."""
    upstream, names = context.upstream, simulated_models(context)
    runs = {}
    for name in names:
        model = upstream[f"simulate_{name}"]
        made_by = upstream.get(name) or upstream.get("teach") or upstream["teacher"]
        key = made_by["key"] if name in TRAINED_MODELS else f"{made_by['key']}-{name}"
        runs[name] = {**model, "model_key": key}
    models = {
        name: upstream[name]
        for name in (*TRAINED_MODELS, "soft_student", "targets")
        if name in upstream
    }
    return StageRecords(upstream["aa"], upstream["cg"], upstream.get("teach"), models, runs)


def _timings(context: Context, records: StageRecords, frames: Frames) -> dict[str, float]:
    """ms per force evaluation of every simulated model and, with a cgkd ensemble, of its
    member 0 and the whole ensemble, each in the flavour ``simulate.kernels`` runs on
    ``simulate.platform``."""
    settings = MDSettings(
        kernels=context("simulate.kernels"), platform=context("simulate.platform")
    )
    files = {name: Path(run["model_file"]) for name, run in records.runs.items()}
    if records.teachers:
        for name in ("teacher", "ensemble"):
            files.setdefault(name, model_file(*model_files(name, records.teachers), settings))
    elif "teacher" in context.upstream:  # an external TorchScript teacher
        files.setdefault("teacher", model_files("teacher", context.upstream["teacher"])[0])
    return {
        name: time_force_evaluation(
            path,
            frames.positions[-1],
            frames.boxes[-1],
            frames.masses,
            context("analysis.timing_repeats"),
        )
        for name, path in files.items()
    }


def _analyze(context: Context) -> Record:
    records = _records(context)
    settings = AnalysisSettings(
        observables=context("analysis"),
        reference_stride=context("analysis.reference_stride"),
        frame_interval=context("simulate.report_interval") * context("simulate.timestep"),
        progress=context.progress,
    )
    frames = dataset(records.cg)
    timings = _timings(context, records, frames)
    bonds = read_h5md_bonds(records.cg["dataset"])
    computed = compute(records, frames, settings, timings, bonds)
    out = context.directory
    write_json(out / METRICS_FILE, computed.result.to_json())
    save_curves(computed.curves, out / CURVES_FILE)
    (out / HISTORIES_FILE).write_text(json.dumps(computed.histories))
    return {
        "metrics": str(out / METRICS_FILE),
        "curves": str(out / CURVES_FILE),
        "histories": str(out / HISTORIES_FILE),
    }


ANALYZE = Stage(
    name="analyze",
    summary="observables and metrics of every simulated model against the AA reference",
    build=_analyze,
    version=3,  # 2: an MSD per bead type; 3: D of every source over one lag window
    reads=(
        "analysis",
        "simulate.models",
        "simulate.report_interval",
        "simulate.timestep",
        "simulate.kernels",
        "simulate.platform",
        "teacher.source",
        "schedule.kind",
        "input.trajectory",
    ),
    needs=_needs,
)
