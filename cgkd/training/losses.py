"""Loss terms for teachers and students.

Every term is err(prediction, target) / scale, with err the RMSE, the MAE or their sum
(``LossWeights.error``) over all components (every Cartesian component of every force), so
that the weights w_F, w_f, w_E, w_eps are dimensionless and comparable across systems: force
terms are divided by the RMS of their target force, and both energy terms (total energy per
bead and per-bead energies) by the standard deviation of the teacher's per-bead energies over
the training frames. An optional regulariser w_hier * H penalises the hierarchicality H of
the networks (dimensionless; see ``CGPotential.energies_and_hierarchicality``).

With uncertainty weighting, each component of the teacher-force term counts with weight
1 / (1 + (sigma / <sigma>)^2), sigma the spread of the ensemble members on that component and
<sigma> its mean over the training frames, so components the teachers disagree on pull less.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ERRORS = ("rmse", "mae", "rmse_mae")


Mean = Callable[[Tensor], Tensor]


def prediction_error(
    prediction: Tensor,
    target: Tensor,
    kind: str = "rmse_mae",
    weights: Tensor | None = None,
    mean: Mean = torch.mean,
) -> Tensor:
    """RMSE, MAE or RMSE + MAE (``kind``) over all elements (same units as the inputs); with
    ``weights`` (shaped like the inputs, mean 1), the weighted means of the squared and the
    absolute differences. ``mean``: over the elements here, or over those of every rank of a
    data-parallel run (:func:`cgkd.distributed.global_mean`)."""
    difference = prediction - target
    squared, absolute = difference * difference, torch.abs(difference)
    if weights is not None:
        squared, absolute = weights * squared, weights * absolute
    if kind == "rmse":
        return torch.sqrt(mean(squared))
    if kind == "mae":
        return mean(absolute)
    if kind == "rmse_mae":
        return torch.sqrt(mean(squared)) + mean(absolute)
    raise ValueError(_unknown_error(kind))


def uncertainty_weights(spread: Tensor, mean_spread: float, mean: Mean = torch.mean) -> Tensor:
    """Weights 1 / (1 + (spread / mean_spread)^2) of teacher-force components, scaled to mean 1
    (``spread``: the members' std per component, kJ/mol/nm; ``mean`` as in
    :func:`prediction_error`)."""
    weights = 1.0 / (1.0 + (spread / mean_spread) ** 2)
    return weights / mean(weights)


def _unknown_error(kind: str) -> str:
    return f"unknown loss error {kind!r}; choose one of {', '.join(ERRORS)}"


@dataclass(frozen=True)
class LossWeights:
    """Weights of the student loss L = w_F err(F_S, F_mapped) + w_f err(F_S, F_T)
    + w_E err(E_S, E_T) + w_eps err(eps_S, eps_T) + w_hier H. A teacher or a baseline uses
    w_F (and optionally w_hier) only. ``error`` is one of "rmse", "mae", "rmse_mae";
    ``uncertainty_weighting`` weights the teacher-force term by the ensemble spread."""

    mapped_forces: float = 1.0
    teacher_forces: float = 0.0
    energy: float = 0.0
    bead_energies: float = 0.0
    hierarchicality: float = 0.0
    error: str = "rmse_mae"
    uncertainty_weighting: bool = False

    def __post_init__(self) -> None:
        values = (self.mapped_forces, self.teacher_forces, self.energy, self.bead_energies)
        if min(*values, self.hierarchicality) < 0 or sum(values) == 0:
            raise ValueError(
                f"loss weights must be >= 0 and the force/energy weights not all zero, got {self}"
            )
        if self.error not in ERRORS:
            raise ValueError(_unknown_error(self.error))
        if self.uncertainty_weighting and self.teacher_forces == 0:
            raise ValueError(
                "uncertainty weighting applies to the teacher-force term; set w_f > 0 or "
                "switch loss.uncertainty_weighting off"
            )

    @property
    def needs_teacher(self) -> bool:
        """Whether any term uses teacher labels."""
        return self.teacher_forces > 0 or self.energy > 0 or self.bead_energies > 0


@dataclass
class LossSettings:
    """The student's loss terms, the schema of the ``loss`` config section: the weights w_F
    (mapped forces), w_f (teacher forces), w_E (total energy), w_eps (per-bead energies) of
    :class:`LossWeights`; ``n_teachers``, how many of the ensemble's members label the frames
    (1: a single teacher, None: all); ``uncertainty_weighting`` of the teacher-force term
    (needs n_teachers > 1). The defaults: the ensemble-mean teacher forces alone."""

    w_F: float = 0.0  # noqa: N815 - the config key, after the paper's symbols
    w_f: float = 1.0
    w_E: float = 0.0  # noqa: N815
    w_eps: float = 0.0
    n_teachers: int | None = None
    uncertainty_weighting: bool = False

    def weights(self, error: str, hierarchicality: float) -> LossWeights:
        """The loss weights, with the student's error kind and hierarchicality weight (its
        ``train`` section's)."""
        return LossWeights(
            mapped_forces=self.w_F,
            teacher_forces=self.w_f,
            energy=self.w_E,
            bead_energies=self.w_eps,
            hierarchicality=hierarchicality,
            error=error,
            uncertainty_weighting=self.uncertainty_weighting,
        )
