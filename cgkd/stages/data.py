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


#: Keys of a train section that are not optimiser settings.
_LOSS_KEYS = ("error", "hierarchicality")
_SPLIT_KEYS = ("val_fraction", "test_fraction")


def train_settings(context: Context, section: str, seed: int) -> TrainSettings:
    """The optimiser settings of the train section at ``section`` (e.g. student.train)."""
    values = context(section)
    skip = (*_LOSS_KEYS, *_SPLIT_KEYS)
    return TrainSettings(**{k: v for k, v in values.items() if k not in skip}, seed=seed)


def loss_options(context: Context, section: str) -> dict[str, Any]:
    """The loss settings that live in a train section: error kind and hierarchicality."""
    return {key: context(f"{section}.{key}") for key in _LOSS_KEYS}


def force_matching(context: Context, section: str) -> LossWeights:
    """Loss weights of plain force matching with the train section's error settings."""
    return LossWeights(**loss_options(context, section))
