"""The distilled models: ``student`` and ``baseline`` (the student's architecture trained on
mapped forces only), and with ``schedule.kind=two_stage`` the ``soft_student`` (stage 1).

single: the student learns the teacher's labels of the reference frames. two_stage: the
soft student learns the teacher's labels of teacher-sampled frames (``sample``), then the
student is it fine-tuned on the mapped forces of the screened reference frames (``screen``);
the baseline trains on those frames alone. Both then record ``force_rmse_soft``, their error
against the teacher on the soft stage's held-out frames (the fine-tuned student also
``start_force_rmse_soft``): how much of the teacher fine-tuning left, next to a model that
never saw it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from cgkd.io.frames import Frames
from cgkd.models.checkpoint import build_potential, load_potential, save_potential
from cgkd.models.potential import CGPotential
from cgkd.simulation.export import export_flavours
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import (
    SPLIT_READS,
    dataset,
    fitted_prior,
    force_matching,
    reference_splits,
    train_settings,
    training_frames,
)
from cgkd.stages.sample import soft_targets
from cgkd.stages.teacher import has_bead_energies
from cgkd.training.curves import plot_loss_curves
from cgkd.training.dataset import FrameSource, Splits, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainSettings, evaluate, train_potential

#: Distillation schedules (``schedule.kind``).
SCHEDULES = ("single", "two_stage")


def schedule(context: Context) -> str:
    """``schedule.kind``, checked."""
    kind = context("schedule.kind")
    if kind not in SCHEDULES:
        raise ValueError(f"schedule.kind={kind!r} is unknown; use one of {list(SCHEDULES)}")
    return kind


def student_loss(context: Context, teacher: Record | None = None) -> LossWeights:
    """The student's loss weights: the ``loss`` section with the student's error kind and
    hierarchicality weight. With a ``teacher`` record, terms its labels cannot serve are
    refused."""
    loss = context.settings("loss")
    train = train_settings(context, "student.train", context("seed"))
    weights = loss.weights(train.error, train.hierarchicality)
    if teacher is not None and weights.bead_energies > 0 and not has_bead_energies(teacher):
        raise ValueError(
            f"loss.w_eps={loss.w_eps} needs per-bead energies, which a teacher.source="
            f"{teacher['source']} teacher does not give; set loss.w_eps=0"
        )
    if schedule(context) == "two_stage" and weights.mapped_forces > 0:
        raise ValueError(
            f"loss.w_F={loss.w_F}: with schedule=two_stage the soft stage has no mapped "
            "forces (the hard stage fits them); set loss.w_F=0"
        )
    return weights


def train_model(
    context: Context,
    data: FrameSource,
    splits: Splits,
    weights: LossWeights,
    *,
    settings: TrainSettings | None = None,
    start: Path | None = None,
    extra: dict[str, Any] | None = None,
    soft_test: tuple[TrainingData, np.ndarray] | None = None,
) -> Record:
    """A student-architecture model (the stage's name) trained on ``data``: from scratch, or
    fine-tuned from the saved model ``start``; saved (``<name>.pt``) and exported
    (``<name>.ts`` and its fused flavour). With ``soft_test`` (teacher-labelled frames and
    indices) its force RMSE against those labels is recorded (``force_rmse_soft``; with
    ``start`` also ``start_force_rmse_soft``)."""
    name, out, seed = context.stage.name, context.directory, context("seed")
    prior = fitted_prior(context.upstream["prior"])
    type_names = context.upstream["cg"]["type_names"]
    settings = settings or train_settings(context, "student.train", seed)
    facts: dict[str, float] = {}  # with start: its test errors before fine-tuning
    network = {**context("student.model"), "n_species": len(type_names)}
    if start is None:
        potential = build_potential([network], prior, seeds=[seed])
    else:
        potential = load_potential(start)[0]
        facts["start_force_rmse_mapped"] = evaluate(potential, data, splits.test)[
            "force_rmse_mapped"
        ]
        if soft_test is not None:
            facts["start_force_rmse_soft"] = _soft_error(potential, soft_test)
    result = train_potential(
        potential,
        data,
        splits,
        weights,
        settings,
        description=name,
        progress=context.progress,
        checkpoint=out / "checkpoint.pt",
        fine_tune=start is not None,
        device=context.device,
    )
    if soft_test is not None:
        facts["force_rmse_soft"] = _soft_error(potential, soft_test)
    save_potential(out / f"{name}.pt", potential, [network], prior, {"history": result.history})
    meta = {"type_names": type_names, "config": context("student"), "loss_weights": asdict(weights)}
    exported = export_flavours(potential, data.species, out / f"{name}.ts", meta)
    plot_loss_curves({name: result.history}, out / "loss.png", title=name)
    return {
        "model": exported["plain"],
        "checkpoint": str(out / f"{name}.pt"),
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        **(extra or {}),
        **facts,
        **result.test_metrics,
        "history": result.history,
    }


def _soft_error(potential: CGPotential, soft_test: tuple[TrainingData, np.ndarray]) -> float:
    """Force RMSE (kJ/mol/nm) against the teacher's labels of the given soft frames."""
    data, frames = soft_test
    return evaluate(potential, data, frames)["force_rmse_teacher"]


def soft_dataset(context: Context, frames: Frames) -> tuple[Frames, TrainingData, Splits]:
    """The soft frames of the ``soft`` upstream record as a dataset (teacher forces in place
    of mapped ones), as training data with their labels, and their splits (like the
    reference's: the student's fractions and the seed)."""
    positions, boxes, targets = soft_targets(context.upstream["soft"])
    soft = Frames(
        positions=positions,
        forces=targets.forces,
        boxes=boxes,
        times=np.arange(len(positions), dtype=float),
        masses=frames.masses,
        types=frames.types,
        type_names=frames.type_names,
    )
    splits = Splits.random(
        soft.n_frames,
        context("student.train.val_fraction"),
        context("student.train.test_fraction"),
        context("seed"),
        context("student.train.split_block"),
    )
    return soft, TrainingData.from_frames(soft, targets), splits


def _student(context: Context) -> Record:
    cg = context.upstream["cg"]
    if schedule(context) == "single":
        data = training_frames(context, cg, context.upstream["labels"])
        weights = student_loss(context, context.upstream["teacher"])
        return train_model(context, data, reference_splits(context, data.n_frames), weights)
    frames = dataset(cg)
    return _fine_tune(context, frames, reference_splits(context, frames.n_frames))


def _soft_student(context: Context) -> Record:
    frames = dataset(context.upstream["cg"])
    _, data, splits = soft_dataset(context, frames)
    settings = train_settings(context, "student.train", context("seed"))
    return train_model(
        context,
        data,
        splits,
        student_loss(context, context.upstream["teacher"]),
        settings=replace(settings, epochs=int(context("schedule.soft.epochs"))),
    )


def _fine_tune(context: Context, frames: Frames, splits: Splits) -> Record:
    """Stage 2: the stage-1 student fine-tuned on the hard frames' mapped forces with
    ``schedule.hard.soft_per_hard`` soft frames per hard frame mixed in (their labels as the
    force targets), at ``schedule.hard.learning_rate_factor`` times the learning rate.
    Validation and test: the reference splits' mapped forces. The soft stage's held-out
    frames with their labels measure forgetting."""
    hard_cfg = context("schedule.hard")
    soft_frames, soft_data, soft_splits = soft_dataset(context, frames)
    hard = np.asarray(context.upstream["hard"]["indices"])
    n_mix = min(soft_frames.n_frames, round(float(hard_cfg["soft_per_hard"]) * len(hard)))
    mixed = np.linspace(0, soft_frames.n_frames - 1, n_mix).round().astype(int) if n_mix else []
    parts = [frames.select(hard), soft_frames.select(mixed), frames.select(splits.val)]
    parts.append(frames.select(splits.test))
    combined = Frames.concatenate(parts)
    sizes = np.cumsum([0] + [part.n_frames for part in parts])
    tune = Splits(
        train=np.arange(sizes[2]),
        val=np.arange(sizes[2], sizes[3]),
        test=np.arange(sizes[3], sizes[4]),
    )
    base = train_settings(context, "student.train", context("seed"))
    settings = replace(
        base,
        epochs=int(hard_cfg["epochs"]),
        learning_rate=base.learning_rate * float(hard_cfg["learning_rate_factor"]),
    )
    return train_model(
        context,
        TrainingData.from_frames(combined),
        tune,
        force_matching(base),
        settings=settings,
        start=Path(context.upstream["soft_student"]["checkpoint"]),
        extra={"n_hard": len(hard), "n_soft_mixed": int(n_mix)},
        soft_test=(soft_data, soft_splits.test),
    )


def _baseline(context: Context) -> Record:
    weights = force_matching(train_settings(context, "student.train", context("seed")))
    if schedule(context) == "single":
        data = training_frames(context, context.upstream["cg"])
        return train_model(context, data, reference_splits(context, data.n_frames), weights)
    frames = dataset(context.upstream["cg"])
    splits = reference_splits(context, frames.n_frames)
    hard = np.asarray(context.upstream["hard"]["indices"])
    _, soft_data, soft_splits = soft_dataset(context, frames)
    data, soft_test = TrainingData.from_frames(frames), (soft_data, soft_splits.test)
    return train_model(
        context, data, Splits(hard, splits.val, splits.test), weights, soft_test=soft_test
    )


#: What every model of the student's architecture reads.
_MODEL_READS = ("student", "schedule.kind", *SPLIT_READS)
_BASIS = {"cg": Request("map"), "prior": Request("prior")}


def _student_needs(context: Context) -> dict[str, Request]:
    if schedule(context) == "single":
        return {**_BASIS, "labels": Request("label"), "teacher": Request("teacher")}
    two_stage = {"soft": Request("sample"), "hard": Request("screen")}
    return {**_BASIS, **two_stage, "soft_student": Request("soft_student")}


STUDENT = Stage(
    name="student",
    summary="the student: distilled from the teacher's labels (two-stage: then fine-tuned)",
    build=_student,
    reads=lambda context: (
        *_MODEL_READS,
        *(("loss",) if schedule(context) == "single" else ("schedule.hard",)),
    ),
    needs=_student_needs,
    keep=("checkpoint.pt",),
    data_parallel=True,
)
SOFT_STUDENT = Stage(
    name="soft_student",
    summary="two-stage stage 1: the student on the teacher's labels of sampled frames",
    build=_soft_student,
    reads=(*_MODEL_READS, "loss", "schedule.soft"),
    needs=lambda context: {**_BASIS, "soft": Request("sample"), "teacher": Request("teacher")},
    keep=("checkpoint.pt",),
    data_parallel=True,
)
BASELINE = Stage(
    name="baseline",
    summary="the student's architecture on mapped forces only (two-stage: the hard frames)",
    build=_baseline,
    reads=_MODEL_READS,
    needs=lambda context: {
        **_BASIS,
        **(
            {"soft": Request("sample"), "hard": Request("screen")}
            if schedule(context) == "two_stage"
            else {}
        ),
    },
    keep=("checkpoint.pt",),
    data_parallel=True,
)
