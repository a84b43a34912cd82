"""What most stages share: the CG dataset, the reference splits, the fitted prior and the
training settings of a config section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md
from cgkd.stages.base import Context, Record
from cgkd.training.dataset import Splits
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainSettings

#: What the reference frames' train/val/test splits depend on (the teachers' and every
#: student's splits are these).
SPLIT_READS = ("seed", "teacher.train.val_fraction", "teacher.train.test_fraction")


def dataset(cg: Record) -> Frames:
    """The CG dataset of a map record."""
    return read_h5md(cg["dataset"])


def reference_splits(context: Context, n_frames: int) -> Splits:
    """The reference frames' splits (reads :data:`SPLIT_READS`)."""
    return Splits.random(
        n_frames,
        context("teacher.train.val_fraction"),
        context("teacher.train.test_fraction"),
        context("seed"),
    )


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
