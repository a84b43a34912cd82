"""The analyze stage's computing: from the records of the stages before it, the observables of
the AA reference and of every CG run, their deviations, and the typed
:class:`~cgkd.results.RunResult`. Nothing here reads the config or writes files; rendering
is :mod:`cgkd.report`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cgkd.io.frames import Frames
from cgkd.observables.dynamics import shared_max_lag
from cgkd.observables.sources import Curves, compare_sources, scalars
from cgkd.observables.suite import Analysis, evaluate
from cgkd.observables.trajectory import Trajectory
from cgkd.results import (
    REFERENCE,
    TRAINED_MODELS,
    AnalysisFacts,
    Forces,
    HeldOut,
    Replica,
    RunFacts,
    RunResult,
    Stability,
    SystemFacts,
    Timings,
    ran_on_words,
)

log = logging.getLogger(__name__)

#: Loss curves: {run name: ``TrainResult.history``}.
Histories = dict[str, list[dict[str, float]]]
#: Trained models whose loss curves the run shows, in legend order (after the teachers).
TRAINED = ("soft_student", "student", "baseline")
#: The model refined by relative entropy, whose history is per round, not per epoch.
REFINED = "refined"
#: Keys of a stage record that are files or curves, not held-out errors.
_NOT_ERRORS = ("history", "key", "model", "torchscript", "checkpoint")


@dataclass
class StageRecords:
    """What the stages recorded, as they return it: ``aa`` (generate or import), ``cg`` (map),
    ``teachers`` (teach; None unless the teacher is a cgkd ensemble), ``models`` (distill,
    plus ``classical`` when it was simulated) and ``runs`` (simulate, by model)."""

    aa: dict[str, Any]
    cg: dict[str, Any]
    teachers: dict[str, Any] | None
    models: dict[str, Any]
    runs: dict[str, Any]


@dataclass(frozen=True)
class AnalysisSettings:
    """How to analyze: the ``analysis`` config section (resolved to plain data), every
    ``reference_stride``-th reference frame, ``frame_interval`` ps between saved CG frames."""

    observables: dict[str, Any]
    reference_stride: int
    frame_interval: float
    progress: bool = False


@dataclass
class Computed:
    """A run's analysis: its record, the observables of every source and the loss curves."""

    result: RunResult
    curves: Curves
    histories: Histories


def compute(
    records: StageRecords,
    frames: Frames,
    settings: AnalysisSettings,
    ms_per_force_evaluation: dict[str, float],
    bonds: np.ndarray | None = None,
) -> Computed:
    """Observables of the reference (``frames``, the CG dataset, with its ``bonds`` [K, 2]
    when it has any) and of every simulated model's saved replicas, measured alike; their
    deviations and scalars; held-out force errors, stability and timings
    (``ms_per_force_evaluation`` by model, measured by the caller) as one :class:`RunResult`.
    What the run is (its :class:`RunFacts` and the system's name) is the config's, added when
    it is rendered (:func:`named`)."""
    reference = Trajectory.from_frames(frames, name=str(records.cg["dataset"]), bonds=bonds)
    log.info("observables of the AA-mapped reference (%d frames)", reference.n_frames)
    runs = {
        name: cg_runs(record, frames, settings.frame_interval, bonds)
        for name, record in records.runs.items()
    }
    # The reference resolves the `auto` settings; every CG run is measured with its values,
    # and D of every source is fitted on the same lag window.
    analyses = {
        REFERENCE: evaluate(
            with_shared_msd_window(
                settings.observables, [[reference], *stable_runs(records, runs)]
            ),
            reference,
            step=settings.reference_stride,
            progress=settings.progress,
        )
    }
    for name, replicas in runs.items():
        if replicas:
            log.info("observables of the %s runs (%d replicas)", name, len(replicas))
            analyses[name] = evaluate(
                analyses[REFERENCE].settings, replicas, progress=settings.progress
            )
    curves = {source: analysis.results for source, analysis in analyses.items()}
    for source, analysis in analyses.items():
        for observable, reason in analysis.skipped.items():
            log.warning("%s of %s skipped: %s", observable, source, reason)
    result = RunResult(
        run=None,
        system=SystemFacts("", records.cg["n_beads"], records.cg["n_frames"]),
        analysis=analysis_facts(analyses),
        observables=compare_sources(curves, REFERENCE),
        scalars=scalars(curves),
        forces=_forces(records),
        timings=Timings(
            aa_ns_per_day=records.aa.get("ns_per_day"),
            cg_ns_per_day={name: r["ns_per_day"] for name, r in records.runs.items()},
            cg_ms_per_step={name: r["ms_per_step"] for name, r in records.runs.items()},
            ms_per_force_evaluation=ms_per_force_evaluation,
            ran_on=_md_platforms(records),
        ),
        stability={name: _stability(r) for name, r in records.runs.items()},
        keys={name: r["model_key"] for name, r in records.runs.items()},
        artifacts={
            "aa": records.aa,
            "cg": records.cg["dataset"],
            **{
                name: records.models[name]["model"]
                for name in TRAINED_MODELS
                if name in records.models
            },
        },
    )
    return Computed(result, curves, histories(records))


def named(result: RunResult, run: RunFacts) -> RunResult:
    """``result`` as the result of the run ``run`` (its facts, and its system's name)."""
    return replace(result, run=run, system=replace(result.system, name=run.system))


def with_shared_msd_window(
    observables: dict[str, Any], sources: list[list[Trajectory]]
) -> dict[str, Any]:
    """The analysis settings with ``msd.max_lag`` set, when it is not, to the longest lag
    every source allows (:func:`~cgkd.observables.dynamics.shared_max_lag`)."""
    msd = observables.get("msd") or {}
    if not msd.get("enabled", True) or msd.get("max_lag") is not None:
        return observables
    if any(run.duration is None for runs in sources for run in runs):
        return observables  # the MSD is skipped with its reason
    durations = [[run.duration for run in runs] for runs in sources if runs]
    n_blocks = int(observables.get("n_blocks", 5))
    return {**observables, "msd": {**msd, "max_lag": shared_max_lag(durations, n_blocks)}}


def _md_platforms(records: StageRecords) -> dict[str, str]:
    """Where the AA MD (``aa``) and each model's CG MD (its first replica) ran, in words, for
    the stages whose records say so."""
    sources = {"aa": records.aa}
    sources.update({name: (run["replicas"] or [{}])[0] for name, run in records.runs.items()})
    words = {name: ran_on_words(record) for name, record in sources.items()}
    return {name: text for name, text in words.items() if text is not None}


def stable_runs(records: StageRecords, runs: dict[str, list[Trajectory]]) -> list[list[Trajectory]]:
    """Each model's runs (as :func:`cg_runs` made them) without those that went bad: a run cut
    short by a collapse must not shorten the lag window of every source."""
    kept = []
    for name, trajectories in runs.items():
        replicas = [r for r in records.runs[name]["replicas"] if r["n_frames"] > 0]
        kept.append(
            [t for t, r in zip(trajectories, replicas, strict=True) if r.get("stable", True)]
        )
    return kept


def cg_runs(
    run: dict[str, Any], frames: Frames, dt: float, bonds: np.ndarray | None = None
) -> list[Trajectory]:
    """The replicas of a simulate record that saved frames, streamed from their DCD files with
    the species of the CG dataset ``frames``, its ``bonds`` and ``dt`` ps between frames."""
    return [
        Trajectory.from_dcd(
            replica["trajectory"],
            replica["topology"],
            dt=dt,
            types=frames.types,
            type_names=frames.type_names,
            bonds=bonds,
        )
        for replica in run["replicas"]
        if replica["n_frames"] > 0
    ]


def analysis_facts(analyses: dict[str, Analysis]) -> AnalysisFacts:
    """What the analysis adapted to the system (see :class:`AnalysisFacts`), from the
    analyses of every source (the reference's under :data:`REFERENCE`)."""
    reference = analyses[REFERENCE]
    shell = reference.shell
    skipped: dict[str, dict[str, str]] = {}
    for source, analysis in analyses.items():
        for observable, reason in analysis.skipped.items():
            skipped.setdefault(observable, {})[source] = reason
    return AnalysisFacts(
        first_shell={
            key: shell[key] for key in ("radius", "coordination", "onset", "pairs", "problem")
        },
        n_species=shell["n_species"],
        auto=reference.auto,
        skipped=skipped,
    )


def histories(records: StageRecords) -> Histories:
    """The loss curves of every ensemble member ("teacher 0", ... by member index) and of the
    trained models (:data:`TRAINED`), per epoch; and the refined model's rounds
    (:data:`REFINED`), when one was refined."""
    members = records.teachers["members"] if records.teachers else []
    curves = {f"teacher {m['member']}": m["history"] for m in members}
    curves.update(
        {
            name: records.models[name]["history"]
            for name in (*TRAINED, REFINED)
            if name in records.models
        }
    )
    return curves


def _forces(records: StageRecords) -> Forces:
    """Held-out force errors of the teachers, the trained models and the classical model."""
    models: dict[str, HeldOut] = {}
    teachers: list[HeldOut] = []
    if records.teachers:
        members = records.teachers["members"]
        teachers = [HeldOut.from_json(_without(m, ("key", "history"))) for m in members]
        models["teacher"] = HeldOut.from_json(_without(members[0], _NOT_ERRORS))
        models["ensemble"] = HeldOut.from_json(records.teachers["ensemble"])
    for name in TRAINED_MODELS:
        if name in records.models:
            models[name] = HeldOut.from_json(_without(records.models[name], _NOT_ERRORS))
    targets = records.models.get("targets")  # none when no student or baseline was simulated
    return Forces(models, teachers, None if targets is None else targets["mean_force_std"])


def _stability(run: dict[str, Any]) -> Stability:
    replicas = [
        Replica(r["seed"], r["stable"], r["steps_completed"], r["message"]) for r in run["replicas"]
    ]
    return Stability(run["stable_fraction"], replicas, run.get("frictions"), run.get("matched_to"))


def _without(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}
