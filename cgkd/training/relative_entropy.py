"""Relative-entropy refinement of a trained CG potential (Shell 2008; Thaler, Stupp and
Zavadlav 2022).

The relative entropy S_rel of the mapped AA ensemble against the model's Boltzmann ensemble
at temperature T has the gradient

    dS_rel/dtheta = beta (<dU/dtheta>_AA - <dU/dtheta>_CG),    beta = 1 / (k_B T),

with U the model's total energy of a frame. Force matching fits the mean force frame by
frame and reaches the structure only as far as its force error allows; relative entropy
fits the ensemble the model samples, so its minimum matches the structure the model's
energy can express. :func:`refine` takes Adam steps along this gradient: each round the
model's own CG MD (``sample``, e.g. :class:`cgkd.simulation.walkers.Walkers`) gives the CG
frames, a random batch of reference frames the AA ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from cgkd.io.atomic import atomic_path
from cgkd.units import kt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineSettings:
    """Relative-entropy refinement of the model ``start`` (``baseline`` or ``student``); the
    schema of the ``refine`` config section.

    ``rounds`` Adam steps at ``learning_rate``. Each round runs every one of ``walkers``
    persistent CG MD runs of the current model ``steps`` further, saving a frame every
    ``save_interval`` steps, and draws ``reference_frames`` AA frames from the training split.
    The walkers start from reference frames (as simulate's replicas do), minimised, and run
    ``equilibration`` unsaved steps first. The walkers run Langevin dynamics (friction 1/ps)
    at the ``simulate`` section's temperature and time step, with its stability limits.
    """

    start: str = "student"
    rounds: int = 100
    learning_rate: float = 3e-4
    walkers: int = 2
    steps: int = 400
    save_interval: int = 20
    equilibration: int = 1000
    reference_frames: int = 20

    def __post_init__(self) -> None:
        if self.start not in REFINABLE:
            raise ValueError(f"refine.start={self.start!r}: choose one of {list(REFINABLE)}")
        for name in ("walkers", "steps", "save_interval", "reference_frames", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"refine.{name} must be positive, got {getattr(self, name)}")
        if self.rounds < 0 or self.equilibration < 0:
            raise ValueError(
                f"refine.rounds ({self.rounds}) and refine.equilibration "
                f"({self.equilibration}) must be >= 0"
            )
        if self.steps < self.save_interval:
            raise ValueError(
                f"refine.steps={self.steps} saves no frame at refine.save_interval="
                f"{self.save_interval}; make steps at least save_interval"
            )


#: The models relative entropy can refine (``refine.start``).
REFINABLE = ("baseline", "student")

#: Frame energies [B] (kJ/mol) of positions [B, N, 3] in boxes [B, 3, 3] (nm).
FrameEnergies = Callable[[Tensor, Tensor], Tensor]


class Sampler(Protocol):
    """CG frames of the model as it is now: positions [F, N, 3] and boxes [F, 3, 3] in nm;
    its state (walkers' positions, velocities, counters) saved with the refinement's."""

    def __call__(self) -> tuple[np.ndarray, np.ndarray]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def relative_entropy_surrogate(
    energies: FrameEnergies,
    reference: tuple[Tensor, Tensor],
    sampled: tuple[Tensor, Tensor],
    temperature: float,
) -> Tensor:
    """beta (<U>_reference - <U>_sampled), a number whose gradient with respect to the
    model's parameters is that of the relative entropy, dS_rel/dtheta, when ``sampled`` are
    frames of the model's own ensemble at ``temperature`` K (its value is not S_rel).
    ``reference`` and ``sampled``: (positions [B, N, 3], boxes [B, 3, 3]) in nm."""
    return (1.0 / kt(temperature)) * (energies(*reference).mean() - energies(*sampled).mean())


def refine(
    model: nn.Module,
    energies: FrameEnergies,
    reference: tuple[np.ndarray, np.ndarray],
    sample: Sampler,
    settings: RefineSettings,
    temperature: float,
    *,
    seed: int = 0,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> list[dict[str, float]]:
    """Refine ``model`` (in place) by ``settings.rounds`` Adam steps down the relative entropy
    of the ``reference`` frames (positions [T, N, 3], boxes [T, 3, 3], nm) against the
    model's ensemble at ``temperature`` K, sampled by ``sample`` after each step.

    Returns one history entry per round: round, energy_gap (<U>_AA - <U>_CG, kJ/mol per
    frame), gradient_norm, cg_frames, seconds (cumulative). With ``checkpoint``, the model,
    optimiser, sampler and history are saved after every round and an interrupted
    refinement continues from the last round saved.
    """
    positions, boxes = reference
    parameter = next(model.parameters())
    dtype, device = parameter.dtype, parameter.device
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sample.load_state_dict(state["sampler"])
        rng.bit_generator.state = state["rng"]
        history = state["history"]
        logger.info("refinement resumed after round %d", len(history))

    def tensors(x: np.ndarray, box: np.ndarray) -> tuple[Tensor, Tensor]:
        return (
            torch.as_tensor(x, dtype=dtype, device=device),
            torch.as_tensor(box, dtype=dtype, device=device),
        )

    elapsed = history[-1]["seconds"] if history else 0.0
    bar = tqdm(
        total=settings.rounds, initial=len(history), desc="relative entropy", disable=not progress
    )
    for round_index in range(len(history), settings.rounds):
        begin = time.perf_counter()
        cg_positions, cg_boxes = sample()
        pick = rng.choice(len(positions), min(settings.reference_frames, len(positions)), False)
        reference_batch = tensors(positions[np.sort(pick)], boxes[np.sort(pick)])
        sampled = tensors(cg_positions, cg_boxes)
        optimizer.zero_grad()
        surrogate = relative_entropy_surrogate(energies, reference_batch, sampled, temperature)
        surrogate.backward()
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients])))
        if not np.isfinite(norm):
            raise FloatingPointError(
                f"the relative-entropy gradient of round {round_index} is not finite; "
                "lower refine.learning_rate"
            )
        optimizer.step()
        elapsed += time.perf_counter() - begin
        history.append(
            {
                "round": round_index,
                "energy_gap": float(surrogate.detach()) * kt(temperature),
                "gradient_norm": norm,
                "cg_frames": len(cg_positions),
                "seconds": elapsed,
            }
        )
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, sample, rng, history)
        bar.update(1)
    bar.close()
    return history


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sample: Sampler,
    rng: np.random.Generator,
    history: list[dict[str, float]],
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": sample.state_dict(),
        "rng": rng.bit_generator.state,
        "history": history,
    }
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
