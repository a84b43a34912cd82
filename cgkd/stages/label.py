"""The teacher's labels of every reference frame (``label``): forces (mean and spread over
members), per-bead and total energies."""

from __future__ import annotations

import numpy as np

from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import dataset
from cgkd.stages.teacher import load_teacher
from cgkd.training.dataset import Targets


def label_facts(targets: Targets) -> Record:
    """What a record says about labels: their mean force spread over the teachers."""
    return {"mean_force_std": float(targets.force_std.mean())}


def _label(context: Context) -> Record:
    cg = context.upstream["cg"]
    teacher = load_teacher(
        context.upstream["teacher"], cg, threads=context("simulate.threads"), device=context.device
    )
    frames = dataset(cg)
    targets = teacher.label(frames.positions, frames.boxes, progress=context.progress)
    path = context.directory / "targets.npz"
    np.savez(path, **targets.__dict__)
    return {"targets": str(path), "n_teachers": teacher.n_teachers, **label_facts(targets)}


LABEL = Stage(
    name="label",
    summary="the teacher's labels of the reference frames: forces, spread, energies",
    build=_label,
    needs=lambda context: {"cg": Request("map"), "teacher": Request("teacher")},
)
