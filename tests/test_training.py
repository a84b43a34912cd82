"""Training: noisy force labels are denoised, divergence is caught, settings are validated,
killed runs resume from their checkpoint, loss options and loss curves work."""

from __future__ import annotations

import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image as plt_image
import numpy as np
import pytest
import torch
from conftest import random_liquid

from cgkd.io.frames import Frames
from cgkd.models.checkpoint import build_potential
from cgkd.training.curves import plot_loss_curves
from cgkd.training.dataset import LabelWriter, Splits, Targets, TrainingData
from cgkd.training.losses import LossWeights, prediction_error, uncertainty_weights
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


def test_uncertainty_weights_have_mean_one_and_fall_with_the_spread():
    spread = torch.tensor([[0.0, 1.0, 2.0, 8.0]])
    weights = uncertainty_weights(spread, mean_spread=2.0)
    assert float(weights.mean()) == pytest.approx(1.0)
    assert bool(torch.all(weights[0, :-1] > weights[0, 1:]))
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    for kind in ("rmse", "mae", "rmse_mae"):
        assert float(prediction_error(a, b, kind, torch.ones(5, 3))) == pytest.approx(
            float(prediction_error(a, b, kind))
        )


def test_uncertainty_weighting_ignores_labels_the_teachers_disagree_on():
    """Teacher labels with a tenth of the components flipped (-3 x the clean force), and a
    large member spread on exactly those: the uncertainty-weighted student ends much closer to
    the clean forces than the unweighted one, which learns about 0.6 x the clean force."""
    frames, clean = noisy_dataset(50, noise=0.0, seed=11)
    rng = np.random.default_rng(12)
    scale = float(np.sqrt(np.mean(clean**2)))
    corrupt = rng.random(clean.shape) < 0.1
    labels = np.where(corrupt, -3.0 * clean, clean)
    spread = np.where(corrupt, 20.0 * scale, 0.05 * scale)
    energies = np.zeros(frames.types.shape)[None].repeat(frames.n_frames, 0)
    targets = Targets(labels, spread, energies, energies.sum(1))
    data = TrainingData.from_frames(frames, targets)
    splits = Splits.random(frames.n_frames, 0.15, 0.15, seed=0)
    settings = TrainSettings(epochs=25, batch_size=4, learning_rate=3e-3, early_stopping=25)
    errors = {}
    for weighting in (False, True):
        potential = build_potential([NETWORK], None, seeds=[0])
        weights = LossWeights(
            mapped_forces=0.0, teacher_forces=1.0, uncertainty_weighting=weighting
        )
        train_potential(potential, data, splits, weights, settings, progress=False)
        _, predicted = _forces(potential, data, torch.as_tensor(splits.test))
        difference = predicted.numpy() - clean[splits.test]
        errors[weighting] = float(np.sqrt(np.mean(difference**2)))
    assert errors[True] < 0.6 * errors[False]


def test_uncertainty_weighting_needs_a_teacher_spread():
    with pytest.raises(ValueError, match="teacher-force term"):
        LossWeights(uncertainty_weighting=True)
    frames, clean = noisy_dataset(6, noise=0.0, seed=13)
    zeros = np.zeros((6, N_BEADS))
    single_teacher = Targets(clean, np.zeros_like(clean), zeros, zeros.sum(1))
    with pytest.raises(ValueError, match="spread of several teachers"):
        train_potential(
            build_potential([NETWORK]),
            TrainingData.from_frames(frames, single_teacher),
            Splits.random(6, 0.2, 0.2, 0),
            LossWeights(mapped_forces=0.0, teacher_forces=1.0, uncertainty_weighting=True),
            TrainSettings(epochs=1),
            progress=False,
        )


def test_splits_are_disjoint_and_cover_every_frame():
    splits = Splits.random(50, 0.1, 0.2, seed=3)
    together = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(together.tolist()) == list(range(50))
    assert len(splits.val) == 5 and len(splits.test) == 10
    assert Splits.from_dict(splits.to_dict()).to_dict() == splits.to_dict()


def test_block_splits_keep_consecutive_frames_on_one_side():
    splits = Splits.random(103, 0.1, 0.2, seed=3, block=10)  # 11 blocks, the last of 3 frames
    side = np.full(103, -1)
    for k, part in enumerate((splits.train, splits.val, splits.test)):
        side[part] = k
    assert (side >= 0).all() and len(np.concatenate(list(splits.to_dict().values()))) == 103
    blocks = side[:100].reshape(10, 10)
    assert (blocks == blocks[:, :1]).all() and (side[100:] == side[100]).all()
    assert len(np.unique(splits.val // 10)) == 1  # round(0.1 * 11) blocks
    assert len(np.unique(splits.test // 10)) == 2  # round(0.2 * 11) blocks

    def held_out_next_to_training(split: Splits) -> int:
        held_out = np.zeros(103, dtype=bool)
        held_out[np.concatenate([split.val, split.test])] = True
        return int(np.sum(held_out[1:] != held_out[:-1]))  # train/held-out boundaries

    assert held_out_next_to_training(splits) <= 2 * 3  # only at the 3 held-out blocks' ends
    assert held_out_next_to_training(Splits.random(103, 0.1, 0.2, seed=3)) > 2 * 3
    with pytest.raises(ValueError, match="split_block=0"):
        Splits.random(10, 0.1, 0.1, seed=0, block=0)
    with pytest.raises(ValueError, match="2 block"):
        Splits.random(10, 0.1, 0.1, seed=0, block=5)


def test_loss_error_choices_weigh_spikes_differently():
    target = torch.zeros(100)
    constant, spiky = torch.ones(100), torch.zeros(100)
    spiky[7] = 10.0
    for kind, on_constant, on_spiky in [
        ("rmse", 1.0, 1.0),
        ("mae", 1.0, 0.1),
        ("rmse_mae", 2.0, 1.1),
    ]:
        assert float(prediction_error(constant, target, kind)) == pytest.approx(on_constant)
        assert float(prediction_error(spiky, target, kind)) == pytest.approx(on_spiky)
    with pytest.raises(ValueError, match="choose one of rmse, mae, rmse_mae"):
        LossWeights(error="huber")
    with pytest.raises(ValueError, match="loss weights"):
        LossWeights(hierarchicality=-1.0)
    with pytest.raises(ValueError, match="loss weights"):
        LossWeights(mapped_forces=0.0, hierarchicality=1.0)


def test_trainer_uses_the_chosen_error():
    frames, _ = noisy_dataset(8, noise=1.0, seed=2)
    data, splits = TrainingData.from_frames(frames), Splits.random(8, 0.25, 0.25, seed=0)
    frozen = TrainSettings(epochs=1, learning_rate=0.0)  # Adam with lr 0 leaves the weights
    val = {
        kind: train_potential(
            build_potential([NETWORK]),
            data,
            splits,
            LossWeights(error=kind),
            frozen,
            progress=False,
        ).history[0]["val_loss"]
        for kind in ("rmse", "mae", "rmse_mae")
    }
    assert val["rmse"] != pytest.approx(val["mae"])
    assert val["rmse_mae"] == pytest.approx(val["rmse"] + val["mae"], rel=1e-5)


def _hierarchicality(potential, data) -> float:
    with torch.no_grad():
        return float(
            potential.energies_and_hierarchicality(data.positions, data.boxes, data.species)[1]
        )


def test_hierarchicality_weight_lowers_the_hierarchicality():
    frames, _ = noisy_dataset(12, noise=1.0, seed=4)
    data, splits = TrainingData.from_frames(frames), Splits.random(12, 0.2, 0.2, seed=0)
    settings = TrainSettings(epochs=4, batch_size=4, learning_rate=3e-3)
    measured, histories = {}, {}
    for weight in (0.0, 1.0):
        potential = build_potential([NETWORK], None, seeds=[0])
        result = train_potential(
            potential, data, splits, LossWeights(hierarchicality=weight), settings, progress=False
        )
        measured[weight], histories[weight] = _hierarchicality(potential, data), result.history
    assert measured[1.0] < 0.5 * measured[0.0]
    assert "hierarchicality" not in histories[0.0][0]
    assert all(0 < entry["hierarchicality"] < 1 for entry in histories[1.0])


@pytest.fixture
def one_thread():
    """Single-threaded torch (as in tests/train_worker.py), so that runs repeat bitwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, one_thread, caplog):
    import train_worker

    checkpoint = tmp_path / "run.ckpt"
    worker = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("train_worker.py")), str(checkpoint)]
    )
    deadline = time.monotonic() + 120
    while worker.poll() is None and time.monotonic() < deadline:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["next_epoch"] >= 2:
            break
        time.sleep(0.005)
    worker.kill()
    assert worker.wait() == -signal.SIGKILL, "the worker ended before it was killed"
    killed = torch.load(checkpoint, weights_only=True)
    assert not killed["stopped"] and len(killed["history"]) == killed["next_epoch"] >= 2

    # Divergence is still caught after a resume, at the right epoch.
    shutil.copy(checkpoint, tmp_path / "nan.ckpt")
    with pytest.raises(TrainingDivergedError, match=f"epoch {killed['next_epoch']} batch 0"):
        train_worker.tiny_run(tmp_path / "nan.ckpt", nan_labels=True)

    with caplog.at_level(logging.INFO, logger="cgkd.training.trainer"):
        resumed, result = train_worker.tiny_run(checkpoint)
    assert f"resuming from {checkpoint} after epoch {killed['next_epoch']}" in caplog.text
    reference, expected = train_worker.tiny_run(None)
    assert result.best_epoch == expected.best_epoch < train_worker.SETTINGS.epochs - 1
    assert {entry["lr"] for entry in expected.history} != {train_worker.SETTINGS.learning_rate}
    for entry, other in zip(result.history, expected.history, strict=True):
        assert entry.keys() == other.keys()
        assert [entry[k] for k in entry if k != "seconds"] == pytest.approx(
            [other[k] for k in other if k != "seconds"], rel=1e-6
        )
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6)
    assert result.test_metrics == pytest.approx(expected.test_metrics, rel=1e-6)

    # A finished run is not trained again: same weights, history and time.
    again, repeated = train_worker.tiny_run(checkpoint)
    assert repeated.history == result.history and repeated.seconds == result.seconds
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    frames, _ = noisy_dataset(6, noise=1.0, seed=5)
    data, splits = TrainingData.from_frames(frames), Splits.random(6, 0.2, 0.2, seed=0)
    checkpoint = tmp_path / "teacher.ckpt"

    def train(weights: LossWeights, settings: TrainSettings):
        return train_potential(
            build_potential([NETWORK]), data, splits, weights, settings, checkpoint=checkpoint
        )

    result = train(LossWeights(), TrainSettings(epochs=1))
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "lr", "seconds"}
    with pytest.raises(ValueError, match=r"teacher\.ckpt .*different train settings; delete it"):
        train(LossWeights(), TrainSettings(epochs=2))
    with pytest.raises(ValueError, match="different loss weights"):
        train(LossWeights(error="mae"), TrainSettings(epochs=1))


def test_loss_curves_are_saved_as_png(tmp_path):
    def history(scale: float) -> list[dict[str, float]]:
        return [
            {
                "epoch": k,
                "train_loss": scale / (k + 1),
                "val_loss": scale / k**0.5 if k else 2.0,
                "lr": 1e-3 * 0.5 ** (k // 3),
                "seconds": 0.1 * k,
            }
            for k in range(8)
        ]

    runs = {f"teacher {k}": history(k) for k in (1, 2)}
    runs["student"] = history(0.5)
    runs["student"][3]["val_loss"] = math.nan  # a gap, not a failure
    path = plot_loss_curves(runs, tmp_path / "figures" / "loss.png", title="water")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt_image.imread(path).shape[0] > 100
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]  # no temporary left
    with pytest.raises(ValueError, match="empty training history for 'baseline'"):
        plot_loss_curves({**runs, "baseline": []}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="no training histories"):
        plot_loss_curves({}, tmp_path / "none.png")
    assert not (tmp_path / "empty.png").exists()


@pytest.mark.parametrize("student", [False, True], ids=["teacher", "student"])
def test_streamed_training_gives_the_same_model_as_the_in_memory_one(tmp_path, student):
    """The same frames read batch by batch from their H5MD file (and, for a student, its
    teacher's labels mapped from their files) train, with one thread and the same seed, to
    bit-identical weights, statistics and held-out metrics."""
    from cgkd.io.h5md import read_h5md, write_h5md
    from cgkd.training.dataset import StreamedFrames, train_statistics

    frames, clean = noisy_dataset(24, noise=5.0, seed=4)
    path = write_h5md(tmp_path / "cg.h5md", frames)
    in_memory, streamed = TrainingData.from_frames(read_h5md(path)), StreamedFrames(path)
    weights = LossWeights()
    if student:
        rng = np.random.default_rng(3)
        bead_energies = rng.normal(0.0, 3.0, clean.shape[:2])
        spread = rng.uniform(0.5, 2.0, clean.shape)
        labels = Targets(clean, spread, bead_energies, bead_energies.sum(1))
        with LabelWriter(tmp_path / "targets", *clean.shape[:2]) as writer:
            for first in (0, 10, 20):  # in chunks, as the label stage writes them
                writer.append(Targets(*(getattr(labels, f)[first:][:10] for f in vars(labels))))
        in_memory = in_memory.with_targets(Targets.load(tmp_path / "targets"))
        streamed = StreamedFrames(path, labels=tmp_path / "targets")
        weights = LossWeights(0.5, 1.0, 0.1, 0.1, uncertainty_weighting=True)
    splits = Splits.random(frames.n_frames, 0.2, 0.2, seed=1)
    assert train_statistics(in_memory, splits.train) == train_statistics(streamed, splits.train)
    settings = TrainSettings(epochs=3, batch_size=5, learning_rate=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models, metrics = [], []
        for data in (in_memory, streamed):
            potential = build_potential([NETWORK], None, seeds=[0])
            result = train_potential(potential, data, splits, weights, settings, progress=False)
            models.append(potential.state_dict())
            metrics.append(result.test_metrics)
    finally:
        torch.set_num_threads(threads)
    assert models[0].keys() == models[1].keys()
    for name in models[0]:
        assert torch.equal(models[0][name], models[1][name]), name
    assert metrics[0] == metrics[1]


def test_streamed_batches_and_a_dataset_changed_under_them(tmp_path):
    """Streamed batches are the frames asked for, also when worker processes read them
    ahead; a dataset rewritten or cut short while training reads it stops the next batch
    with an error naming the file; a truncated file does not open."""
    from cgkd.io.h5md import H5MDError, write_h5md
    from cgkd.training.dataset import StreamedFrames, batches

    frames, _ = noisy_dataset(6, noise=1.0, seed=2)
    path = write_h5md(tmp_path / "cg.h5md", frames)
    streamed = StreamedFrames(path)
    batch = streamed.select(np.array([4, 1, 4]))
    np.testing.assert_array_equal(batch.positions[1].numpy(), frames.positions[1].astype("f4"))
    np.testing.assert_array_equal(batch.mapped_forces[0], batch.mapped_forces[2])
    order = np.array([5, 0, 3, 2, 1, 4])
    ahead = list(batches(StreamedFrames(path, workers=2), order, 2))  # read in 2 processes
    for chunk, read in zip((order[:2], order[2:4], order[4:]), ahead, strict=True):
        assert torch.equal(read.positions, streamed.select(chunk).positions)
        assert torch.equal(read.mapped_forces, streamed.select(chunk).mapped_forces)
    write_h5md(path, frames)  # rewritten: the same content, but another file
    with pytest.raises(RuntimeError, match=rf"{path} changed while training read it"):
        streamed.select(np.array([0]))
    streamed = StreamedFrames(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(RuntimeError, match="changed while training read it"):
        streamed.select(np.array([0]))
    with pytest.raises(H5MDError, match=str(path)):
        StreamedFrames(path)
    write_h5md(path, frames)
    zeros = Targets(*(np.zeros(shape) for shape in Targets.shapes(5, frames.n_particles).values()))
    with LabelWriter(tmp_path / "other", 5, frames.n_particles) as writer:
        writer.append(zeros)  # the labels of 5 other frames
    with pytest.raises(ValueError, match=r"float64 \(5, 24, 3\), not float64 \(6, 24, 3\)"):
        StreamedFrames(path, labels=tmp_path / "other")
    short = LabelWriter(tmp_path / "short", 5, frames.n_particles)
    with pytest.raises(ValueError, match="labels of 3 frames written for 5"), short as writer:
        writer.append(Targets(*(getattr(zeros, f)[:3] for f in vars(zeros))))
    assert not any((tmp_path / "short").iterdir())  # nothing half-written left
    with pytest.raises(FileNotFoundError, match="rerun `cgkd label`"):
        Targets.load(tmp_path)
