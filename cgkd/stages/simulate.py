"""CG MD in OpenMM (``simulate``), one stage per model of ``simulate.models``: the distilled
ones, the one refined by relative entropy, the teachers used directly and the classical
force-matched pair potential.

``simulate.replicas`` runs of each, replica k from a mapped AA frame (the last, then spread
back over the dataset) with seed ``seed + k``. A run that goes bad is recorded as unstable,
not raised; an interrupted stage resumes every replica from its checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from cgkd.io.h5md import read_h5md_bonds
from cgkd.simulation.export import fused_path
from cgkd.simulation.md import MDSettings, model_file, run_replicas
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import dataset

log = logging.getLogger(__name__)

#: Models the simulate stage can run: the distilled ones, the refined one, the teachers used
#: directly and the classical force-matched pair potential.
SIMULATED_MODELS = ("student", "baseline", "refined", "teacher", "ensemble", "classical")


def simulated_models(context: Context) -> list[str]:
    """``simulate.models``, checked against ``teacher.source``."""
    names = list(context("simulate.models"))
    unknown = [name for name in names if name not in SIMULATED_MODELS]
    if unknown or not names:
        raise ValueError(
            f"simulate.models={names} names no model or unknown ones {unknown}; "
            f"choose from {', '.join(SIMULATED_MODELS)}"
        )
    source = context("teacher.source")
    external = {"torchscript": ["ensemble"], "openmm": ["teacher", "ensemble"]}.get(source, [])
    if refused := [name for name in names if name in external]:
        raise ValueError(
            f"simulate.models has {refused} but teacher.source={source} has no such CG model; "
            "leave them out (an all-atom teacher's own MD is the reference)"
        )
    return names


def model_request(name: str, source: str) -> Request:
    """The stage that makes the model ``name`` (teacher and ensemble: the teach stage of a
    cgkd ensemble, or the teacher stage of a TorchScript file)."""
    if name in ("teacher", "ensemble"):
        return Request("teach") if source == "ensemble" else Request("teacher")
    return Request(name)


def model_files(name: str, record: Record) -> tuple[Path, Path | None]:
    """The exported model of ``name`` made by the stage of ``record``: its plain file (a
    native System XML for the classical model) and its fused flavour (or None)."""
    if name == "classical":
        return Path(record["model"]), None
    if name in ("teacher", "ensemble"):
        if "path" in record:  # an external TorchScript teacher
            return Path(record["path"]), None
        plain = Path(record["dir"]) / ("teacher_0.ts" if name == "teacher" else "ensemble.ts")
    else:
        plain = Path(record["model"])
    return plain, fused_path(plain)


def md_settings(context: Context) -> MDSettings:
    """The CG MD settings of the ``simulate`` section."""
    return context.settings("simulate", seed=context("seed"))


def _simulate(context: Context) -> Record:
    name, cg = str(context.param), context.upstream["cg"]
    frames, bonds = dataset(cg), read_h5md_bonds(cg["dataset"])
    settings = md_settings(context)
    matched_to = None
    if "friction" in context.upstream:  # simulate.friction=matched
        settings = replace(settings, frictions=context.upstream["friction"]["frictions"])
        matched_to = context.upstream["friction"].get("observed")
    n_frames = len(frames.positions)
    starts = [n_frames - 1 - (k * n_frames) // settings.replicas for k in range(settings.replicas)]
    plain, fused = model_files(name, context.upstream["model"])
    path = model_file(plain, fused, settings)
    log.info("CG MD of the %s: %s", name, path)
    results = run_replicas(
        path,
        frames.positions[starts],
        frames.boxes[starts],
        frames.masses,
        settings,
        context.directory,
        bead_names=[frames.type_names[t] for t in frames.types],
        bonds=bonds,
        progress=context.progress,
    )
    for k, result in enumerate(results):
        if not result.stable:
            log.warning("%s replica %d: %s", name, k, result.message)
    n_stable = sum(result.stable for result in results)
    return {
        "model_file": str(path),
        "replicas": [r.to_json() for r in results],
        "start_frames": starts,
        "n_stable": n_stable,
        "stable_fraction": n_stable / len(results),
        "frictions": settings.frictions,
        "matched_to": matched_to,
        "ms_per_step": float(np.median([r.ms_per_step for r in results])),
        "ns_per_day": float(np.median([r.ns_per_day for r in results])),
    }


#: The settings of the calibrate stage alone.
CALIBRATION = (
    "simulate.calibration_frictions",
    "simulate.calibration_steps",
    "simulate.calibration_refinements",
    "simulate.calibration_target",
    "simulate.vacf_max_lag",
)

SIMULATE = Stage(
    name="simulate",
    summary="CG MD in OpenMM of one model of simulate.models (simulate[student], ...)",
    build=_simulate,
    reads=("simulate", "seed", "teacher.source"),
    # the calibration enters through the calibrate stage's key, and only when it runs
    ignores=("simulate.models", *CALIBRATION),
    needs=lambda context: {
        "cg": Request("map"),
        "model": model_request(str(context.param), context("teacher.source")),
        **(
            {"friction": Request("calibrate", context.param)}
            if context("simulate.friction") == "matched"
            else {}
        ),
    },
    keep=("replica_*",),
)
