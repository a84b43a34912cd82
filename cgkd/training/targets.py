"""Ensemble inference and distillation targets: the teacher ensemble labels frames with
its mean and spread."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cgkd.models.potential import CGPotential
from cgkd.training.dataset import Targets


def predict_members(
    ensemble: CGPotential, positions: Tensor, boxes: Tensor, species: Tensor
) -> tuple[Tensor, Tensor]:
    """Every member's forces [K, B, N, 3] (kJ/mol/nm) and bead energies [K, B, N] (kJ/mol)
    on a batch of frames (positions [B, N, 3] and boxes [B, 3, 3] in nm, species [N])."""
    x = positions.detach().requires_grad_(True)
    energies = ensemble.member_bead_energies(x, boxes, species)
    forces = torch.stack(
        [-torch.autograd.grad(member.sum(), x, retain_graph=True)[0] for member in energies]
    )
    return forces.detach(), energies.detach()


def label_frames(
    ensemble: CGPotential,
    positions: np.ndarray,
    boxes: np.ndarray,
    species: np.ndarray,
    *,
    batch_size: int = 8,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> Targets:
    """Mean forces, force std, mean bead energies and mean energies of ``ensemble`` on frames,
    computed on ``device`` (the ensemble is back on the CPU afterwards).

    Args:
        positions: [T, N, 3] nm. boxes: [T, 3, 3] nm. species: [N] bead types.
    """
    ensemble.to(device)
    species_t = torch.as_tensor(species, dtype=torch.long, device=device)
    forces, spread, bead_energies = [], [], []
    batches = range(0, len(positions), batch_size)
    for first in tqdm(batches, desc="labelling frames", disable=not progress, unit="batch"):
        member_forces, member_energies = predict_members(
            ensemble,
            torch.as_tensor(positions[first : first + batch_size], dtype=torch.float32).to(device),
            torch.as_tensor(boxes[first : first + batch_size], dtype=torch.float32).to(device),
            species_t,
        )
        forces.append(member_forces.mean(0).cpu().numpy())
        spread.append(member_forces.std(0, unbiased=False).cpu().numpy())
        bead_energies.append(member_energies.mean(0).cpu().numpy())
    ensemble.to("cpu")
    bead = np.concatenate(bead_energies).astype(np.float64)
    return Targets(
        forces=np.concatenate(forces).astype(np.float64),
        force_std=np.concatenate(spread).astype(np.float64),
        bead_energies=bead,
        energies=bead.sum(1),
    )
