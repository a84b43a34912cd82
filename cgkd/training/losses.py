"""Loss terms for teachers and students.

Every term is err(prediction, target) / scale, with err the RMSE, the MAE or their sum
(``LossWeights.error``) over all components (every Cartesian component of every force), so
that the weights w_F, w_f, w_E, w_eps are dimensionless and comparable across systems: force
terms are divided by the RMS of their target force, and both energy terms (total energy per
bead and per-bead energies) by the standard deviation of the teacher's per-bead energies over
the training frames. An optional regulariser w_hier * H penalises the hierarchicality H of
the networks (dimensionless; see ``CGPotential.energies_and_hierarchicality``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ERRORS = ("rmse", "mae", "rmse_mae")


def prediction_error(prediction: Tensor, target: Tensor, kind: str = "rmse_mae") -> Tensor:
    """RMSE, MAE or RMSE + MAE (``kind``) over all elements (same units as the inputs)."""
    difference = prediction - target
    if kind == "rmse":
        return torch.sqrt(torch.mean(difference * difference))
    if kind == "mae":
        return torch.mean(torch.abs(difference))
    if kind == "rmse_mae":
        return torch.sqrt(torch.mean(difference * difference)) + torch.mean(torch.abs(difference))
    raise ValueError(_unknown_error(kind))


def _unknown_error(kind: str) -> str:
    return f"unknown loss error {kind!r}; choose one of {', '.join(ERRORS)}"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the student loss L = w_F err(F_S, F_mapped) + w_f err(F_S, F_T)
    + w_E err(E_S, E_T) + w_eps err(eps_S, eps_T) + w_hier H. A teacher or a baseline uses
    w_F (and optionally w_hier) only. ``error`` is one of "rmse", "mae", "rmse_mae"."""

    mapped_forces: float = 1.0
    teacher_forces: float = 0.0
    energy: float = 0.0
    bead_energies: float = 0.0
    hierarchicality: float = 0.0
    error: str = "rmse_mae"

    def __post_init__(self) -> None:
        values = (self.mapped_forces, self.teacher_forces, self.energy, self.bead_energies)
        if min(*values, self.hierarchicality) < 0 or sum(values) == 0:
            raise ValueError(
                f"loss weights must be >= 0 and the force/energy weights not all zero, got {self}"
            )
        if self.error not in ERRORS:
            raise ValueError(_unknown_error(self.error))

    @property
    def needs_teacher(self) -> bool:
        """Whether any term uses teacher labels."""
        return self.teacher_forces > 0 or self.energy > 0 or self.bead_energies > 0
