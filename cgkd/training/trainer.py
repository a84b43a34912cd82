"""Force matching and distillation: one trainer for teachers, students and baselines."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cgkd.models.potential import CGPotential
from cgkd.training.dataset import Splits, TrainingData
from cgkd.training.losses import LossWeights, rmse_mae


@dataclass(frozen=True)
class TrainSettings:
    """Adam, learning rate reduced on a validation plateau, early stopping on validation loss."""

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 3
    early_stopping: int = 8
    grad_clip: float = 10.0
    seed: int = 0


@dataclass
class TrainResult:
    """What a training run did: per-epoch history, best epoch and held-out errors."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def predict(
    potential: CGPotential,
    positions: Tensor,
    boxes: Tensor,
    species: Tensor,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Bead energies [B, N] (kJ/mol) and forces -dE/dx [B, N, 3] (kJ/mol/nm) of a batch."""
    positions = positions.detach().requires_grad_(True)
    bead_energies = potential(positions, boxes, species)
    (gradient,) = torch.autograd.grad(bead_energies.sum(), positions, create_graph=create_graph)
    return bead_energies, -gradient


class _Loss:
    """The weighted, scale-normalised loss of a given training set."""

    def __init__(self, data: TrainingData, train: np.ndarray, weights: LossWeights):
        if weights.needs_teacher and data.teacher_forces is None:
            raise ValueError(
                "loss weights use teacher terms but the training data has no teacher labels"
            )
        self.weights = weights
        self.force_scale = _rms(data.mapped_forces[train])
        if data.teacher_forces is not None:
            assert data.teacher_energies is not None and data.teacher_bead_energies is not None
            self.teacher_force_scale = _rms(data.teacher_forces[train])
            # One energy scale for both energy terms: the spread of the teacher's bead energies.
            # (The spread of E/N over frames is ~sqrt(N) times smaller: w_E became far too stiff.)
            self.energy_scale = float(torch.std(data.teacher_bead_energies[train])) + 1e-6

    def __call__(
        self, data: TrainingData, batch: Tensor, energies: Tensor, forces: Tensor
    ) -> Tensor:
        w = self.weights
        loss = torch.zeros((), dtype=forces.dtype)
        if w.mapped_forces > 0:
            loss = (
                loss
                + w.mapped_forces * rmse_mae(forces, data.mapped_forces[batch]) / self.force_scale
            )
        if data.teacher_forces is None:
            return loss
        assert data.teacher_energies is not None and data.teacher_bead_energies is not None
        if w.teacher_forces > 0:
            target = data.teacher_forces[batch]
            loss = loss + w.teacher_forces * rmse_mae(forces, target) / self.teacher_force_scale
        if w.energy > 0:
            n_beads = energies.shape[1]
            per_bead = energies.sum(1) / n_beads
            target = data.teacher_energies[batch] / n_beads
            loss = loss + w.energy * rmse_mae(per_bead, target) / self.energy_scale
        if w.bead_energies > 0:
            target = data.teacher_bead_energies[batch]
            loss = loss + w.bead_energies * rmse_mae(energies, target) / self.energy_scale
        return loss


def _rms(values: Tensor) -> float:
    return float(torch.sqrt(torch.mean(values * values))) + 1e-6


def prepare_potential(potential: CGPotential, data: TrainingData, train: np.ndarray) -> None:
    """Set each network's energy scale from the data (0.1 nm times the RMS force) and, when
    teacher energies exist, its per-species energy offsets from the teacher's mean bead energies."""
    force_rms = _rms(data.mapped_forces[train])
    for network in potential.networks:
        network.energy_scale.fill_(0.1 * force_rms)
        if data.teacher_bead_energies is None:
            continue
        with torch.no_grad():
            bead_energies = data.teacher_bead_energies[train]
            for species in range(network.n_species):
                mask = data.species == species
                if bool(mask.any()):
                    mean = float(bead_energies[:, mask].mean())
                    network.species_energy.weight[0, species] = mean / float(network.energy_scale)


def train_potential(
    potential: CGPotential,
    data: TrainingData,
    splits: Splits,
    weights: LossWeights,
    settings: TrainSettings,
    *,
    description: str = "training",
    progress: bool = True,
) -> TrainResult:
    """Train ``potential`` in place; the best state on the validation set is kept.

    Raises:
        TrainingDivergedError: the loss became NaN/Inf (the message names epoch and batch).
    """
    torch.manual_seed(settings.seed)
    generator = np.random.default_rng(settings.seed)
    prepare_potential(potential, data, splits.train)
    loss_fn = _Loss(data, splits.train, weights)
    optimizer = torch.optim.Adam(potential.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=settings.lr_factor, patience=settings.lr_patience
    )
    result = TrainResult()
    best_state = copy.deepcopy(potential.state_dict())
    start = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc=description, disable=not progress, unit="epoch")
    for epoch in bar:
        potential.train()
        order = generator.permutation(splits.train)
        train_losses = []
        for number, first in enumerate(range(0, len(order), settings.batch_size)):
            batch = torch.as_tensor(order[first : first + settings.batch_size])
            energies, forces = predict(
                potential, data.positions[batch], data.boxes[batch], data.species, create_graph=True
            )
            loss = loss_fn(data, batch, energies, forces)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"{description}: loss is {float(loss.detach())} at epoch {epoch} "
                    f"batch {number}; "
                    "lower train.learning_rate or check the dataset for NaN/huge forces"
                )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(potential.parameters(), settings.grad_clip)
            optimizer.step()
            train_losses.append(float(loss.detach()))
        val_loss = _mean_loss(potential, data, splits.val, loss_fn, settings.batch_size)
        scheduler.step(val_loss)
        lr = optimizer.param_groups[0]["lr"]
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(train_losses)),
                "val_loss": val_loss,
                "lr": lr,
            }
        )
        bar.set_postfix(train=f"{np.mean(train_losses):.4f}", val=f"{val_loss:.4f}")
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(potential.state_dict())
        elif epoch - result.best_epoch >= settings.early_stopping:
            break
    potential.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    result.test_metrics = evaluate(potential, data, splits.test, settings.batch_size)
    return result


def _mean_loss(
    potential: CGPotential, data: TrainingData, frames: np.ndarray, loss_fn: _Loss, batch_size: int
) -> float:
    losses, counts = [], []
    for first in range(0, len(frames), batch_size):
        batch = torch.as_tensor(frames[first : first + batch_size])
        energies, forces = predict(
            potential, data.positions[batch], data.boxes[batch], data.species
        )
        losses.append(float(loss_fn(data, batch, energies.detach(), forces.detach())))
        counts.append(len(batch))
    return float(np.average(losses, weights=counts))


def evaluate(
    potential: CGPotential, data: TrainingData, frames: np.ndarray, batch_size: int = 8
) -> dict[str, float]:
    """Force RMSE (kJ/mol/nm) vs mapped and teacher forces; energy RMSE per bead (kJ/mol)."""
    forces, energies = [], []
    for first in range(0, len(frames), batch_size):
        batch = torch.as_tensor(frames[first : first + batch_size])
        bead_energies, batch_forces = predict(
            potential, data.positions[batch], data.boxes[batch], data.species
        )
        forces.append(batch_forces.detach())
        energies.append(bead_energies.detach())
    index = torch.as_tensor(frames)
    predicted, bead_energies = torch.cat(forces), torch.cat(energies)
    metrics = {"force_rmse_mapped": _rms(predicted - data.mapped_forces[index])}
    if data.teacher_forces is not None:
        assert data.teacher_energies is not None and data.teacher_bead_energies is not None
        metrics["force_rmse_teacher"] = _rms(predicted - data.teacher_forces[index])
        n_beads = bead_energies.shape[1]
        metrics["energy_rmse_per_bead"] = _rms(
            (bead_energies.sum(1) - data.teacher_energies[index]) / n_beads
        )
        metrics["bead_energy_rmse"] = _rms(bead_energies - data.teacher_bead_energies[index])
    return metrics
