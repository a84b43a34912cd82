"""Force matching and distillation: one trainer for teachers, students and baselines.

With a checkpoint file, training state is saved after every epoch and an interrupted run
resumes where it stopped, ending with the same weights as an uninterrupted run.

In a data-parallel launch (:mod:`cgkd.distributed`), every rank trains the same model through
``DistributedDataParallel`` on its share of each batch, with the loss's means taken over the
whole batch, so that the ranks together take the very steps one process would; each rank
validates on all validation frames (the same decisions everywhere) and rank 0 alone writes
the checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cgkd import distributed
from cgkd.io.atomic import atomic_path
from cgkd.models.potential import CGPotential
from cgkd.training.dataset import (
    FrameSource,
    Splits,
    TrainingData,
    TrainStatistics,
    batches,
    read_chunks,
    train_statistics,
)
from cgkd.training.losses import LossWeights, Mean, prediction_error, uncertainty_weights

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Adam, learning rate reduced on a validation plateau, early stopping on validation loss;
    the schema of a ``train`` config section (``teacher.train``, ``student.train``).

    ``learning_rate`` is multiplied by ``lr_factor`` after ``lr_patience`` epochs without a
    better validation loss; training stops after ``early_stopping`` such epochs and keeps the
    best epoch. ``grad_clip``: the largest gradient norm. The reference frames are split at
    random into ``val_fraction`` validation and ``test_fraction`` test frames, the rest
    training, in blocks of ``split_block`` consecutive frames (1: frame by frame; with frames
    saved closer than their forces decorrelate, blocks keep near-copies of held-out frames out
    of training). ``error``: the error of every loss term over all force components, rmse, mae
    or rmse_mae (their sum); ``hierarchicality``: the weight of the regulariser that keeps
    later HIP-NN layers small corrections (both go into the model's ``LossWeights``).
    ``seed`` is set by the code (the run's, or a teacher member's), not by the config.
    """

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 2
    early_stopping: int = 8
    grad_clip: float = 10.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_block: int = 1
    error: str = "rmse_mae"
    hierarchicality: float = 0.0
    seed: int = 0


@dataclass
class TrainResult:
    """What a training run did: per-epoch history, best epoch and held-out errors.

    Each history entry holds epoch, train_loss, val_loss, lr, seconds (cumulative wall time)
    and, with a hierarchicality weight, hierarchicality (mean over the epoch's batches).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    seconds: float = 0.0
    test_metrics: dict[str, float] = field(default_factory=dict)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


class _Predictor(torch.nn.Module):
    """A potential's bead energies, forces and, when asked, hierarchicality: the module that
    ``DistributedDataParallel`` wraps. The forces are computed inside its forward, so that
    DDP sees one backward pass per step, and the energies leave it detached unless the loss
    uses them (``energies_in_loss``), so that DDP finds the parameters that get no gradient
    from its outputs' graph (per-species energy offsets under a force-only loss). ``total``:
    how the hierarchicality's batch sums add up (:func:`cgkd.distributed.global_sum`)."""

    def __init__(
        self,
        potential: CGPotential,
        total: Callable[[Tensor], Tensor] | None = None,
        energies_in_loss: bool = True,
    ) -> None:
        super().__init__()
        self.potential, self.total, self.energies_in_loss = potential, total, energies_in_loss

    def forward(
        self,
        positions: Tensor,
        boxes: Tensor,
        species: Tensor,
        create_graph: bool,
        hierarchicality: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        positions = positions.detach().requires_grad_(True)
        regulariser = None
        if hierarchicality:
            bead_energies, regulariser = self.potential.energies_and_hierarchicality(
                positions, boxes, species, self.total
            )
        else:
            bead_energies = self.potential(positions, boxes, species)
        (gradient,) = torch.autograd.grad(bead_energies.sum(), positions, create_graph=create_graph)
        if not self.energies_in_loss:
            bead_energies = bead_energies.detach()
        return bead_energies, -gradient, regulariser


def predict(
    potential: CGPotential | torch.nn.Module,
    positions: Tensor,
    boxes: Tensor,
    species: Tensor,
    create_graph: bool = False,
    hierarchicality: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Bead energies [B, N] (kJ/mol), forces -dE/dx [B, N, 3] (kJ/mol/nm) of a batch and,
    when ``hierarchicality`` is set, the potential's hierarchicality (else None).
    ``potential``: a :class:`CGPotential`, or the data-parallel wrapper of one."""
    predictor = _Predictor(potential) if isinstance(potential, CGPotential) else potential
    return predictor(positions, boxes, species, create_graph, hierarchicality)


class _Loss:
    """The weighted, scale-normalised loss of a given training set."""

    def __init__(self, statistics: TrainStatistics, weights: LossWeights, has_teacher: bool):
        if weights.needs_teacher and not has_teacher:
            raise ValueError(
                "loss weights use teacher terms but the training data has no teacher labels"
            )
        self.weights = weights
        self.force_scale = statistics.force_rms
        if has_teacher:
            assert statistics.teacher_force_rms is not None
            assert statistics.bead_energy_std is not None
            self.teacher_force_scale = statistics.teacher_force_rms
            self.energy_scale = statistics.bead_energy_std
        if weights.uncertainty_weighting:
            if not statistics.mean_spread:
                raise ValueError(
                    "uncertainty weighting needs the spread of several teachers; label with "
                    "loss.n_teachers > 1 or switch loss.uncertainty_weighting off"
                )
            self.mean_spread = statistics.mean_spread

    @property
    def uses_hierarchicality(self) -> bool:
        return self.weights.hierarchicality > 0

    def __call__(
        self,
        batch: TrainingData,
        energies: Tensor,
        forces: Tensor,
        hierarchicality: Tensor | None,
        mean: Mean = torch.mean,
    ) -> Tensor:
        """The loss of a ``batch`` (:meth:`TrainingData.select`) whose predicted bead
        ``energies`` and ``forces`` are given; ``mean``: over this batch, or over a batch
        shared among data-parallel ranks (:func:`cgkd.distributed.global_mean`)."""
        w = self.weights

        def err(prediction: Tensor, target: Tensor) -> Tensor:
            return prediction_error(prediction, target, w.error, mean=mean)

        loss = torch.zeros((), dtype=forces.dtype, device=forces.device)
        if w.mapped_forces > 0:
            loss = loss + w.mapped_forces * err(forces, batch.mapped_forces) / self.force_scale
        if self.uses_hierarchicality:
            assert hierarchicality is not None
            loss = loss + w.hierarchicality * hierarchicality
        if batch.teacher_forces is None:
            return loss
        assert batch.teacher_energies is not None and batch.teacher_bead_energies is not None
        if w.teacher_forces > 0:
            weights = None
            if w.uncertainty_weighting:
                assert batch.teacher_force_std is not None
                weights = uncertainty_weights(batch.teacher_force_std, self.mean_spread, mean)
            error = prediction_error(forces, batch.teacher_forces, w.error, weights, mean)
            loss = loss + w.teacher_forces * error / self.teacher_force_scale
        if w.energy > 0:
            n_beads = energies.shape[1]
            per_bead = energies.sum(1) / n_beads
            target = batch.teacher_energies / n_beads
            loss = loss + w.energy * err(per_bead, target) / self.energy_scale
        if w.bead_energies > 0:
            loss = (
                loss
                + w.bead_energies * err(energies, batch.teacher_bead_energies) / self.energy_scale
            )
        return loss


def prepare_potential(potential: CGPotential, statistics: TrainStatistics, species: Tensor) -> None:
    """Set each network's energy scale from the data (0.1 nm times the RMS force) and, when
    teacher energies exist, its per-species energy offsets from the teacher's mean bead
    energies (``statistics`` of the training frames, :func:`train_statistics`)."""
    for network in potential.networks:
        network.energy_scale.fill_(0.1 * statistics.force_rms)
        if statistics.species_bead_energy is None:
            continue
        with torch.no_grad():
            for kind, mean in statistics.species_bead_energy.items():
                if kind < network.n_species and bool((species == kind).any()):
                    network.species_energy.weight[0, kind] = mean / float(network.energy_scale)


def train_potential(
    potential: CGPotential,
    data: FrameSource,
    splits: Splits,
    weights: LossWeights,
    settings: TrainSettings,
    *,
    description: str = "training",
    progress: bool = True,
    checkpoint: Path | None = None,
    fine_tune: bool = False,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train ``potential`` in place on ``device``; the best state on the validation set is
    kept, and the potential is back on the CPU when training ends. ``data`` (in memory, or
    streamed from its file) stays where it is: each batch is moved to ``device`` as it is
    used.

    A fresh potential first gets its energy scale and offsets from the data
    (:func:`prepare_potential`); ``fine_tune`` keeps those of an already trained one.

    The validation loss (which drives learning-rate reduction, early stopping and the best
    state) has the same terms as the training loss. With ``checkpoint``, the training state is
    written there (atomically) after every epoch; if the file exists, training resumes from
    it, and a finished run is not trained again.

    Raises:
        TrainingDivergedError: the loss became NaN/Inf (the message names epoch and batch).
        ValueError: ``checkpoint`` was written with other settings, weights, splits or model.
    """
    torch.manual_seed(settings.seed)
    generator = np.random.default_rng(settings.seed)
    world = distributed.world()
    statistics = train_statistics(data, splits.train)
    if not fine_tune:
        prepare_potential(potential, statistics, data.species)
    potential.to(device)  # before the optimiser, which holds the parameters
    predictor = _Predictor(potential, energies_in_loss=weights.energy + weights.bead_energies > 0)
    trained: torch.nn.Module = predictor
    if world.size > 1:
        on_gpu = torch.device(device).type == "cuda"
        trained = torch.nn.parallel.DistributedDataParallel(
            predictor, device_ids=[device] if on_gpu else None, find_unused_parameters=True
        )
    loss_fn = _Loss(statistics, weights, data.has_teacher)
    optimizer = torch.optim.Adam(potential.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=settings.lr_factor, patience=settings.lr_patience
    )
    fingerprint = _fingerprint(potential, splits, weights, settings)
    result = TrainResult()
    best_state = copy.deepcopy(potential.state_dict())
    first_epoch, stopped = 0, False
    saved = None
    if checkpoint is not None and world.primary and Path(checkpoint).is_file():
        saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
    saved = distributed.share(saved)  # every rank resumes from rank 0's checkpoint
    if saved is not None:
        assert checkpoint is not None
        result, best_state, first_epoch, stopped = _resume(
            saved, checkpoint, fingerprint, potential, optimizer, scheduler, generator, device
        )
        logger.info(
            "%s: resuming from %s after epoch %d of %d%s",
            description,
            checkpoint,
            first_epoch,
            settings.epochs,
            " (finished)" if stopped else "",
        )
    start = time.perf_counter() - result.seconds
    bar = tqdm(
        range(first_epoch, first_epoch if stopped else settings.epochs),
        desc=description,
        disable=not progress,
        unit="epoch",
        initial=first_epoch,
        total=settings.epochs,
    )
    for epoch in bar:
        potential.train()
        order = generator.permutation(splits.train)
        train_losses, hierarchicality = [], []
        chunks, active = _share_of_batches(order, settings.batch_size, world)
        for number, batch in enumerate(read_chunks(data, chunks, device)):
            predictor.total = distributed.global_sum(active[number])
            energies, forces, regulariser = predict(
                trained,
                batch.positions,
                batch.boxes,
                batch.species,
                create_graph=True,
                hierarchicality=loss_fn.uses_hierarchicality,
            )
            mean = distributed.global_mean(active[number])
            loss = loss_fn(batch, energies, forces, regulariser, mean)
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
            if regulariser is not None:
                hierarchicality.append(float(regulariser.detach()))
        val_loss = _mean_loss(potential, data, splits.val, loss_fn, settings.batch_size)
        scheduler.step(val_loss)
        result.seconds = time.perf_counter() - start
        entry = {
            "epoch": epoch,
            "train_loss": float(np.mean(train_losses)),
            "val_loss": val_loss,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": result.seconds,
        }
        if hierarchicality:
            entry["hierarchicality"] = float(np.mean(hierarchicality))
        result.history.append(entry)
        bar.set_postfix(train=f"{entry['train_loss']:.4f}", val=f"{val_loss:.4f}")
        improved = val_loss < result.best_val_loss
        if improved:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(potential.state_dict())
        stopped = epoch + 1 == settings.epochs or (
            not improved and epoch - result.best_epoch >= settings.early_stopping
        )
        if checkpoint is not None and world.primary:
            _save_checkpoint(
                checkpoint,
                {
                    "fingerprint": fingerprint,
                    "model": potential.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "numpy_rng": generator.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "history": result.history,
                    "best_state": best_state,
                    "best_epoch": result.best_epoch,
                    "best_val_loss": result.best_val_loss,
                    "next_epoch": epoch + 1,
                    "stopped": stopped,
                    "seconds": result.seconds,
                },
            )
        if stopped:
            break
    potential.load_state_dict(best_state)
    result.test_metrics = evaluate(potential, data, splits.test, settings.batch_size)
    potential.to("cpu")
    return result


def _share_of_batches(
    order: np.ndarray, size: int, world: distributed.World
) -> tuple[list[np.ndarray], list[bool]]:
    """This rank's frames of each batch of ``size`` frames of ``order`` (frames rank,
    rank + ranks, ...), and whether it has any: a rank dealt none of a short last batch
    reads its first frame as a stand-in that counts nothing."""
    chunks, active = [], []
    for first in range(0, len(order), size):
        batch = order[first : first + size]
        share = batch[world.rank :: world.size]
        chunks.append(share if len(share) else batch[:1])
        active.append(len(share) > 0)
    return chunks, active


def _fingerprint(
    potential: CGPotential, splits: Splits, weights: LossWeights, settings: TrainSettings
) -> dict[str, str]:
    """A short hash of each thing a resumed run must share with the run that saved it."""
    parts: dict[str, Any] = {
        "train settings": asdict(settings),
        "loss weights": asdict(weights),
        "splits": splits.to_dict(),
        "number of parameters": sum(p.numel() for p in potential.parameters()),
    }
    return {
        part: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for part, value in parts.items()
    }


def _resume(
    saved: dict[str, Any],
    checkpoint: Path,
    fingerprint: dict[str, str],
    potential: CGPotential,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    generator: np.random.Generator,
    device: torch.device | str,
) -> tuple[TrainResult, dict[str, Tensor], int, bool]:
    """Restore the training state ``saved`` in ``checkpoint`` onto ``device`` (any device: it
    need not be the one that saved it); return the result so far, the best state, the next
    epoch and whether the run had stopped."""
    changed = [part for part, value in fingerprint.items() if saved["fingerprint"][part] != value]
    if changed:
        raise ValueError(
            f"checkpoint {checkpoint} was written with different {', '.join(changed)}; "
            "delete it to train afresh or restore the settings it was written with"
        )
    potential.load_state_dict(saved["model"])  # copied onto the potential's device
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    generator.bit_generator.state = saved["numpy_rng"]
    torch.set_rng_state(saved["torch_rng"])
    result = TrainResult(
        history=saved["history"],
        best_epoch=saved["best_epoch"],
        best_val_loss=saved["best_val_loss"],
        seconds=saved["seconds"],
    )
    best_state = {name: value.to(device) for name, value in saved["best_state"].items()}
    return result, best_state, saved["next_epoch"], saved["stopped"]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def _mean_loss(
    potential: CGPotential, data: FrameSource, frames: np.ndarray, loss_fn: _Loss, batch_size: int
) -> float:
    losses, counts = [], []
    for batch in batches(data, frames, batch_size, _device_of(potential)):
        energies, forces, regulariser = predict(
            potential,
            batch.positions,
            batch.boxes,
            batch.species,
            hierarchicality=loss_fn.uses_hierarchicality,
        )
        losses.append(float(loss_fn(batch, energies, forces, regulariser).detach()))
        counts.append(batch.n_frames)
    return float(np.average(losses, weights=counts))


def _device_of(potential: CGPotential) -> torch.device:
    """The device the potential's parameters are on (the CPU for one without any)."""
    return next(iter(potential.parameters()), torch.empty(0)).device


def evaluate(
    potential: CGPotential, data: FrameSource, frames: np.ndarray, batch_size: int = 8
) -> dict[str, float]:
    """Force RMSE (kJ/mol/nm) vs mapped and teacher forces, the RMS of the mapped forces
    (kJ/mol/nm) and, with teacher labels, energy RMSEs per bead (kJ/mol); squared errors
    summed in float64 over batches."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, error: Tensor) -> None:
        sums[name] = sums.get(name, 0.0) + float(error.detach().double().square().sum())
        counts[name] = counts.get(name, 0) + error.numel()

    for batch in batches(data, frames, batch_size, _device_of(potential)):
        bead_energies, forces, _ = predict(potential, batch.positions, batch.boxes, batch.species)
        add("force_rmse_mapped", forces - batch.mapped_forces)
        # The scale of the labels: an RMSE near it means the model learned nothing.
        add("mapped_force_rms", batch.mapped_forces)
        if batch.teacher_forces is None:
            continue
        assert batch.teacher_energies is not None and batch.teacher_bead_energies is not None
        add("force_rmse_teacher", forces - batch.teacher_forces)
        n_beads = bead_energies.shape[1]
        add("energy_rmse_per_bead", (bead_energies.sum(1) - batch.teacher_energies) / n_beads)
        add("bead_energy_rmse", bead_energies - batch.teacher_bead_energies)
    return {name: float(np.sqrt(sums[name] / counts[name])) + 1e-6 for name in sums}
