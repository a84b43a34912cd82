"""Training: noisy force labels are denoised, divergence is caught, settings are validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_liquid

from cgkd.io.frames import Frames
from cgkd.models.checkpoint import build_potential
from cgkd.training.dataset import Splits, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.targets import label_frames
from cgkd.training.trainer import TrainingDivergedError, TrainSettings, evaluate, train_potential

EDGE, N_BEADS = 1.4, 24


def pair_forces(positions: np.ndarray) -> np.ndarray:
    """Forces (kJ/mol/nm) of U(r) = 40 exp(-(r - 0.25)^2 / 0.005) summed over pairs (r < 0.6 nm)."""
    delta = positions[None, :, :] - positions[:, None, :]
    delta -= EDGE * np.round(delta / EDGE)
    r = np.linalg.norm(delta, axis=-1)
    np.fill_diagonal(r, 10.0)  # beyond the cutoff: no self-interaction
    du_dr = 40 * np.exp(-((r - 0.25) ** 2) / 0.005) * (-2 * (r - 0.25) / 0.005)
    du_dr[r > 0.6] = 0.0
    # F_i = sum_j dU/dr * (x_j - x_i) / r
    return np.sum(du_dr[:, :, None] * delta / r[:, :, None], axis=1)


def noisy_dataset(n_frames: int, noise: float, seed: int) -> tuple[Frames, np.ndarray]:
    rng = np.random.default_rng(seed)
    positions = np.stack([random_liquid(N_BEADS, EDGE, seed + k, 0.2) for k in range(n_frames)])
    clean = np.stack([pair_forces(x) for x in positions])
    frames = Frames(
        positions=positions,
        forces=clean + rng.normal(0.0, noise, clean.shape),
        boxes=np.tile(np.eye(3) * EDGE, (n_frames, 1, 1)),
        times=np.arange(n_frames, dtype=float),
        masses=np.full(N_BEADS, 18.0),
        types=np.zeros(N_BEADS, dtype=np.int64),
        type_names=["W"],
    )
    return frames, clean


NETWORK = dict(
    n_species=1,
    n_features=16,
    n_sensitivities=10,
    n_interactions=1,
    n_atom_layers=1,
    tensor_order=0,
    cutoff=0.6,
    soft_min=0.15,
    soft_max=0.55,
)


def test_force_matching_on_noisy_labels_recovers_the_clean_forces():
    frames, clean = noisy_dataset(60, noise=0.0, seed=0)
    noise = 2.0 * float(np.sqrt(np.mean(clean**2)))  # labels twice as noisy as the signal
    frames.forces = clean + np.random.default_rng(1).normal(0.0, noise, clean.shape)
    data = TrainingData.from_frames(frames)
    splits = Splits.random(frames.n_frames, 0.15, 0.15, seed=0)
    potential = build_potential([NETWORK], None, seeds=[0])
    settings = TrainSettings(epochs=40, batch_size=4, learning_rate=3e-3, early_stopping=40)
    train_potential(potential, data, splits, LossWeights(), settings, progress=False)
    test = torch.as_tensor(splits.test)
    _, predicted = _forces(potential, data, test)
    error_vs_clean = float(
        torch.sqrt(torch.mean((predicted - torch.as_tensor(clean[splits.test])) ** 2))
    )
    # The labels miss the clean force by `noise`; the trained model must do far better.
    assert error_vs_clean < 0.35 * noise
    assert evaluate(potential, data, splits.test)["force_rmse_mapped"] > 0.9 * noise


def _forces(potential, data, frames):
    x = data.positions[frames].clone().requires_grad_(True)
    energy = potential(x, data.boxes[frames], data.species).sum()
    return energy, -torch.autograd.grad(energy, x)[0].detach()


def test_distillation_targets_are_the_ensemble_mean_and_spread():
    frames, _ = noisy_dataset(4, noise=1.0, seed=3)
    ensemble = build_potential([NETWORK, NETWORK], None, seeds=[4, 5])
    targets = label_frames(ensemble, frames.positions, frames.boxes, frames.types, progress=False)
    x = torch.as_tensor(frames.positions, dtype=torch.float32).requires_grad_(True)
    boxes = torch.as_tensor(frames.boxes, dtype=torch.float32)
    members = ensemble.member_bead_energies(x, boxes, torch.as_tensor(frames.types))
    forces = [-torch.autograd.grad(m.sum(), x, retain_graph=True)[0].numpy() for m in members]
    np.testing.assert_allclose(targets.forces, np.mean(forces, axis=0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(targets.force_std, np.std(forces, axis=0), rtol=1e-4, atol=1e-4)
    assert targets.force_std.mean() > 0
    np.testing.assert_allclose(targets.energies, targets.bead_energies.sum(1), rtol=1e-6)


def test_nan_labels_stop_training_naming_epoch_and_batch():
    frames, _ = noisy_dataset(8, noise=1.0, seed=7)
    frames.forces[:] = np.nan
    data = TrainingData.from_frames(frames)
    splits = Splits.random(8, 0.2, 0.2, seed=0)
    with pytest.raises(TrainingDivergedError, match="epoch 0 batch 0"):
        train_potential(
            build_potential([NETWORK]),
            data,
            splits,
            LossWeights(),
            TrainSettings(epochs=2),
            progress=False,
        )


def test_student_weights_need_teacher_labels_and_must_be_positive():
    frames, _ = noisy_dataset(6, noise=1.0, seed=9)
    data = TrainingData.from_frames(frames)
    with pytest.raises(ValueError, match="teacher labels"):
        train_potential(
            build_potential([NETWORK]),
            data,
            Splits.random(6, 0.2, 0.2, 0),
            LossWeights(mapped_forces=0.0, teacher_forces=1.0),
            TrainSettings(epochs=1),
            progress=False,
        )
    with pytest.raises(ValueError, match="loss weights"):
        LossWeights(mapped_forces=0.0)
    with pytest.raises(ValueError, match="loss weights"):
        LossWeights(energy=-1.0)


def test_splits_are_disjoint_and_cover_every_frame():
    splits = Splits.random(50, 0.1, 0.2, seed=3)
    together = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(together.tolist()) == list(range(50))
    assert len(splits.val) == 5 and len(splits.test) == 10
    assert Splits.from_dict(splits.to_dict()).to_dict() == splits.to_dict()
