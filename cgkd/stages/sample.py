"""Soft targets of two-stage distillation (``sample``): teacher MD from reference training
frames at the sampler's temperatures, labelled by the teacher."""

from __future__ import annotations

import logging

import numpy as np

from cgkd.simulation.sampling import SamplerSettings
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import SPLIT_READS, dataset, reference_splits
from cgkd.stages.label import label_facts
from cgkd.stages.teacher import load_teacher
from cgkd.training.dataset import Targets

log = logging.getLogger(__name__)


def sampler_settings(context: Context) -> SamplerSettings:
    """The teacher MD settings of the ``sampler`` section."""
    return context.settings("sampler")


def _sample(context: Context) -> Record:
    cg = context.upstream["cg"]
    teacher = load_teacher(
        context.upstream["teacher"], cg, threads=context("simulate.threads"), device=context.device
    )
    settings = sampler_settings(context)
    frames = dataset(cg)
    train = reference_splits(context, frames.n_frames).train
    starts = train[np.linspace(0, len(train) - 1, settings.starts).round().astype(int)]
    log.info(
        "teacher MD: %d runs at %s K, %d frames each",
        settings.starts * len(settings.temperatures),
        ", ".join(f"{t:.0f}" for t in settings.temperatures),
        settings.frames_per_run,
    )
    sampled = teacher.sample(
        frames.positions[starts],
        frames.boxes[starts],
        frames.masses,
        settings,
        seed=int(context("seed")),
        progress=context.progress,
    )
    for failure in sampled.failures:
        log.warning("teacher MD stopped early: %s", failure)
    targets = teacher.label(sampled.positions, sampled.boxes, progress=context.progress)
    path = context.directory / "soft.npz"
    np.savez(
        path,
        positions=sampled.positions,
        boxes=sampled.boxes,
        temperatures=sampled.temperatures,
        runs=sampled.runs,
        **targets.__dict__,
    )
    return {
        "soft": str(path),
        "n_frames": sampled.n_frames,
        "start_frames": starts.tolist(),
        "temperatures": settings.temperatures,
        "failures": sampled.failures,
        **label_facts(float(targets.force_std.mean())),
    }


def soft_targets(sample: Record) -> tuple[np.ndarray, np.ndarray, Targets]:
    """Positions, boxes and labels of a sample record's soft frames."""
    data = np.load(sample["soft"])
    targets = Targets(**{name: data[name] for name in Targets.__dataclass_fields__})
    return data["positions"], data["boxes"], targets


SAMPLE = Stage(
    name="sample",
    summary="teacher MD at the sampler's temperatures, labelled: soft targets (two-stage)",
    build=_sample,
    reads=("sampler", *SPLIT_READS),
    needs=lambda context: {"cg": Request("map"), "teacher": Request("teacher")},
)
