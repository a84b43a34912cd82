"""Loss terms for teachers and students.

Every term is err(prediction, target) / scale with err = RMSE + MAE over all components,
so that the weights w_F, w_f, w_E, w_eps are dimensionless and comparable across systems:
force terms are divided by the RMS of their target force, and both energy terms (total
energy per bead and per-bead energies) by the standard deviation of the teacher's
per-bead energies over the training frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def rmse_mae(prediction: Tensor, target: Tensor) -> Tensor:
    """RMSE + MAE over all elements (same units as the inputs)."""
    difference = prediction - target
    return torch.sqrt(torch.mean(difference * difference)) + torch.mean(torch.abs(difference))


@dataclass(frozen=True)
class LossWeights:
    """Weights of the student loss L = w_F err(F_S, F_mapped) + w_f err(F_S, F_T)
    + w_E err(E_S, E_T) + w_eps err(eps_S, eps_T). A teacher or a baseline uses w_F only."""

    mapped_forces: float = 1.0
    teacher_forces: float = 0.0
    energy: float = 0.0
    bead_energies: float = 0.0

    def __post_init__(self) -> None:
        values = (self.mapped_forces, self.teacher_forces, self.energy, self.bead_energies)
        if min(values) < 0 or sum(values) == 0:
            raise ValueError(f"loss weights must be >= 0 and not all zero, got {self}")

    @property
    def needs_teacher(self) -> bool:
        """Whether any term uses teacher labels."""
        return self.teacher_forces > 0 or self.energy > 0 or self.bead_energies > 0
