"""What most stages share: the CG dataset, the reference splits, the fitted prior and the
training settings of a config section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader, read_h5md
from cgkd.stages.base import Context, Record
from cgkd.training.dataset import FrameSource, Splits, StreamedFrames, Targets, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainSettings

#: What the reference frames' train/val/test splits depend on (the teachers' and every
#: student's splits are these).
SPLIT_READS = (
    "seed",
    "teacher.train.val_fraction",
    "teacher.train.test_fraction",
    "teacher.train.split_block",
    "train_frames",
)


def dataset(cg: Record) -> Frames:
    """The CG dataset of a map record."""
    return read_h5md(cg["dataset"])


#: ``stream: auto`` streams a dataset whose positions and forces (float32) exceed this (bytes).
STREAM_ABOVE = 2 << 30


def training_frames(context: Context, cg: Record, labels: Record | None = None) -> FrameSource:
    """The CG dataset of a map record as training reads it, with the teacher's labels of a
    label record when given: streamed from its files
    (:class:`~cgkd.training.dataset.StreamedFrames`; the ``stream`` setting: true, or auto
    when its positions and forces take over :data:`STREAM_ABOVE` bytes) or loaded. Streamed
    batches are read ahead by two worker processes when training runs on a GPU."""
    mode = context.config.stream
    if mode not in ("auto", True, False):
        raise ValueError(f"stream={mode!r} is not one of auto, true, false; set one of them")
    if mode == "auto":
        with H5MDReader(cg["dataset"]) as reader:
            mode = reader.n_frames * reader.n_particles * 3 * 2 * 4 > STREAM_ABOVE
    targets = None if labels is None else labels["targets"]
    if not mode:
        loaded = None if targets is None else Targets.load(targets)
        return TrainingData.from_frames(dataset(cg), loaded)
    # On a GPU two processes read batches ahead; on the CPU they would take its cores.
    workers = 2 if context.device.type == "cuda" else 0
    return StreamedFrames(cg["dataset"], workers=workers, labels=targets)


def reference_splits(context: Context, n_frames: int) -> Splits:
    """The reference frames' splits (reads :data:`SPLIT_READS`): random by ``seed`` in blocks
    of ``split_block`` frames, the training frames cut to the first ``train_frames`` of a
    shuffle by ``seed`` when set."""
    splits = Splits.random(
        n_frames,
        context("teacher.train.val_fraction"),
        context("teacher.train.test_fraction"),
        context("seed"),
        context("teacher.train.split_block"),
    )
    wanted = context("train_frames")
    if wanted is None:
        return splits
    if not 1 <= int(wanted) <= len(splits.train):
        raise ValueError(
            f"train_frames={wanted}: the reference has {len(splits.train)} training frames "
            f"(of {n_frames}); use 1 to {len(splits.train)}, or null for all"
        )
    shuffled = np.random.default_rng(context("seed")).permutation(splits.train)
    return Splits(np.sort(shuffled[: int(wanted)]), splits.val, splits.test)


def fitted_prior(prior: Record) -> dict[str, Any] | None:
    """The fitted prior of a prior record (None when every prior is switched off)."""
    fitted = json.loads(Path(prior["prior"]).read_text())
    if fitted["repulsion"] is None and fitted["bonds"] is None and fitted["angles"] is None:
        return None
    return fitted


def train_settings(context: Context, section: str, seed: int) -> TrainSettings:
    """The training settings of the train section at ``section`` (e.g. student.train)."""
    return context.settings(section, seed=seed)


def force_matching(settings: TrainSettings) -> LossWeights:
    """Loss weights of plain force matching with a train section's error settings."""
    return LossWeights(error=settings.error, hierarchicality=settings.hierarchicality)
