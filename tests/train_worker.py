"""The tiny training run of the checkpoint test; ``python tests/train_worker.py CHECKPOINT``
trains it with that checkpoint (single-threaded, so that runs are bitwise reproducible)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from test_training import NETWORK, noisy_dataset

from cgkd.models.checkpoint import build_potential
from cgkd.models.potential import CGPotential
from cgkd.training.dataset import Splits, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainResult, TrainSettings, train_potential

N_FRAMES = 20
SETTINGS = TrainSettings(epochs=100, batch_size=4, learning_rate=3e-3, lr_patience=1, seed=5)


def tiny_run(checkpoint: Path | None, nan_labels: bool = False) -> tuple[CGPotential, TrainResult]:
    """Train a fresh tiny potential (24 beads, 20 noisy frames; NaN forces with ``nan_labels``)."""
    frames, _ = noisy_dataset(N_FRAMES, noise=1.0, seed=11)
    if nan_labels:
        frames.forces[:] = float("nan")
    potential = build_potential([NETWORK], None, seeds=[0])
    result = train_potential(
        potential,
        TrainingData.from_frames(frames),
        Splits.random(N_FRAMES, 0.2, 0.2, seed=0),
        LossWeights(),
        SETTINGS,
        progress=False,
        checkpoint=checkpoint,
    )
    return potential, result


if __name__ == "__main__":
    torch.set_num_threads(1)
    tiny_run(Path(sys.argv[1]))
