"""Observables and metrics of every simulated model against the AA reference (``analyze``).

The stage computes (observables, deviations, force errors, timings) and caches the numbers;
rendering them (report.md, figures, result.json) into a run's output directory is
:func:`cgkd.report.render`'s job.
"""

from __future__ import annotations

from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.distill import schedule
from cgkd.stages.reference import reference_request
from cgkd.stages.simulate import model_request, simulated_models

#: What a record's force metrics come from, by simulated model (teacher and ensemble: the
#: teach record).
_TRAINED = ("student", "baseline", "classical")


def _needs(context: Context) -> dict[str, Request]:
    names, source = simulated_models(context), context("teacher.source")
    needs = {"aa": reference_request(context), "cg": Request("map")}
    if source == "ensemble":
        needs["teach"] = Request("teach")
    elif source == "torchscript":
        needs["teacher"] = Request("teacher")
    for name in names:
        needs[f"simulate_{name}"] = Request("simulate", name)
        if name in _TRAINED:
            needs[name] = model_request(name, source)
    if {"student", "baseline"} & set(names):
        two_stage = schedule(context) == "two_stage"
        needs["targets"] = Request("sample") if two_stage else Request("label")
    return needs


def _analyze(context: Context) -> Record:
    from cgkd.report import measure

    return measure(context)


ANALYZE = Stage(
    name="analyze",
    summary="observables and metrics of every simulated model against the AA reference",
    build=_analyze,
    reads=(
        "analysis",
        "simulate.models",
        "simulate.report_interval",
        "simulate.timestep",
        "simulate.kernels",
        "teacher.source",
        "schedule.kind",
        "input.trajectory",
    ),
    needs=_needs,
)
