"""The tiny training runs of the checkpoint and data-parallel tests.

``python tests/train_worker.py CHECKPOINT`` trains the checkpoint test's run with that
checkpoint (single-threaded, so that runs are bitwise reproducible).
``torchrun --nproc-per-node 2 tests/train_worker.py CHECKPOINT OUT`` trains the data-parallel
test's run (:data:`UNEVEN`) on every rank (gloo), and rank 0 saves the weights and the result
to OUT; CHECKPOINT ``-`` means none.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from test_training import NETWORK, noisy_dataset

from cgkd import distributed
from cgkd.models.checkpoint import build_potential
from cgkd.models.potential import CGPotential
from cgkd.training.dataset import Splits, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainResult, TrainSettings, train_potential

N_FRAMES = 20
SETTINGS = TrainSettings(epochs=100, batch_size=4, learning_rate=3e-3, lr_patience=1, seed=5)
#: The data-parallel run: 13 training frames, so the last batch of 4 has one frame (rank 1
#: gets none), and a hierarchicality term (batch sums over ranks).
UNEVEN = {"n_frames": 21, "weights": LossWeights(hierarchicality=0.1), "epochs": 40}


def tiny_run(
    checkpoint: Path | None,
    nan_labels: bool = False,
    n_frames: int = N_FRAMES,
    weights: LossWeights | None = None,
    epochs: int = SETTINGS.epochs,
) -> tuple[CGPotential, TrainResult]:
    """Train a fresh tiny potential (24 beads, ``n_frames`` noisy frames; NaN forces with
    ``nan_labels``)."""
    frames, _ = noisy_dataset(n_frames, noise=1.0, seed=11)
    if nan_labels:
        frames.forces[:] = float("nan")
    potential = build_potential([NETWORK], None, seeds=[0])
    result = train_potential(
        potential,
        TrainingData.from_frames(frames),
        Splits.random(n_frames, 0.2, 0.2, seed=0),
        LossWeights() if weights is None else weights,
        replace(SETTINGS, epochs=epochs),
        progress=False,
        checkpoint=checkpoint,
    )
    return potential, result


if __name__ == "__main__":
    torch.set_num_threads(1)
    checkpoint = None if sys.argv[1] == "-" else Path(sys.argv[1])
    if len(sys.argv) == 2:
        tiny_run(checkpoint)
        sys.exit()
    with distributed.process_group(torch.device("cpu")):
        potential, result = tiny_run(checkpoint, **UNEVEN)
        if distributed.world().primary:
            saved = {"state": potential.state_dict(), "history": result.history}
            torch.save({**saved, "test": result.test_metrics}, sys.argv[2])
