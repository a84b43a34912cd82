"""Frames of one CG system as tensors for training, with recorded train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from cgkd.io.frames import Frames


@dataclass
class Targets:
    """Teacher-ensemble labels of a set of frames (OpenMM units).

    forces: [T, N, 3] mean force, kJ/mol/nm; force_std: [T, N, 3] spread across members;
    bead_energies: [T, N] mean per-bead energy, kJ/mol; energies: [T] mean total energy, kJ/mol.
    """

    forces: np.ndarray
    force_std: np.ndarray
    bead_energies: np.ndarray
    energies: np.ndarray


@dataclass
class Splits:
    """Frame indices of the training, validation and test sets."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def random(cls, n_frames: int, val_fraction: float, test_fraction: float, seed: int) -> Splits:
        """Shuffle ``n_frames`` with ``seed`` and cut off validation and test fractions."""
        if n_frames < 3:
            raise ValueError(f"need at least 3 frames to split into train/val/test, got {n_frames}")
        order = np.random.default_rng(seed).permutation(n_frames)
        n_val = max(1, round(val_fraction * n_frames))
        n_test = max(1, round(test_fraction * n_frames))
        return cls(
            train=np.sort(order[n_val + n_test :]),
            val=np.sort(order[:n_val]),
            test=np.sort(order[n_val : n_val + n_test]),
        )

    def to_dict(self) -> dict[str, list[int]]:
        """Plain lists, for JSON."""
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[int]]) -> Splits:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: np.asarray(value, dtype=np.int64) for key, value in data.items()})


@dataclass
class TrainingData:
    """Tensors (float32) of one CG system; teacher labels are optional."""

    positions: Tensor
    boxes: Tensor
    species: Tensor
    mapped_forces: Tensor
    teacher_forces: Tensor | None = None
    teacher_energies: Tensor | None = None
    teacher_bead_energies: Tensor | None = None
    teacher_force_std: Tensor | None = None

    @classmethod
    def from_frames(cls, frames: Frames, targets: Targets | None = None) -> TrainingData:
        """Tensors from a CG dataset and, for students, the teacher labels of the same frames."""

        data = cls(
            positions=_tensor(frames.positions),
            boxes=_tensor(frames.boxes),
            species=torch.as_tensor(frames.types, dtype=torch.long),
            mapped_forces=_tensor(frames.forces),
        )
        return data if targets is None else data.with_targets(targets)

    def with_targets(self, targets: Targets) -> TrainingData:
        """The same frames with the teachers' labels of them (for students)."""
        if targets.forces.shape != tuple(self.mapped_forces.shape):
            raise ValueError(
                f"teacher labels have shape {targets.forces.shape} but the dataset has "
                f"{tuple(self.mapped_forces.shape)}; relabel the dataset with this teacher ensemble"
            )

        return replace(
            self,
            teacher_forces=_tensor(targets.forces),
            teacher_energies=_tensor(targets.energies),
            teacher_bead_energies=_tensor(targets.bead_energies),
            teacher_force_std=_tensor(targets.force_std),
        )

    def select(self, frames: np.ndarray, device: torch.device | str = "cpu") -> TrainingData:
        """The ``frames`` (indices) as a batch on ``device``: what one training step reads."""
        index = torch.as_tensor(frames, dtype=torch.long)

        def part(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index].to(device, non_blocking=True)

        return TrainingData(
            positions=part(self.positions),
            boxes=part(self.boxes),
            species=self.species.to(device),
            mapped_forces=part(self.mapped_forces),
            teacher_forces=part(self.teacher_forces),
            teacher_energies=part(self.teacher_energies),
            teacher_bead_energies=part(self.teacher_bead_energies),
            teacher_force_std=part(self.teacher_force_std),
        )

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.positions.shape[0])


def _tensor(array: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)
