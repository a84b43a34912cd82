"""Distillation targets: the teacher ensemble labels frames with its mean and spread."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from cgkd.models.potential import CGPotential
from cgkd.training.dataset import Targets


def label_frames(
    ensemble: CGPotential,
    positions: np.ndarray,
    boxes: np.ndarray,
    species: np.ndarray,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> Targets:
    """Mean forces, force std, mean bead energies and mean energies of ``ensemble`` on frames.

    Args:
        positions: [T, N, 3] nm. boxes: [T, 3, 3] nm. species: [N] bead types.
    """
    species_t = torch.as_tensor(species, dtype=torch.long)
    forces, spread, bead_energies = [], [], []
    batches = range(0, len(positions), batch_size)
    for first in tqdm(batches, desc="labelling frames", disable=not progress, unit="batch"):
        x = torch.as_tensor(
            positions[first : first + batch_size], dtype=torch.float32
        ).requires_grad_(True)
        box = torch.as_tensor(boxes[first : first + batch_size], dtype=torch.float32)
        members = ensemble.member_bead_energies(x, box, species_t)
        member_forces = torch.stack(
            [-torch.autograd.grad(energy.sum(), x, retain_graph=True)[0] for energy in members]
        )
        forces.append(member_forces.mean(0).detach().numpy())
        spread.append(member_forces.std(0, unbiased=False).detach().numpy())
        bead_energies.append(members.mean(0).detach().numpy())
    bead = np.concatenate(bead_energies).astype(np.float64)
    return Targets(
        forces=np.concatenate(forces).astype(np.float64),
        force_std=np.concatenate(spread).astype(np.float64),
        bead_energies=bead,
        energies=bead.sum(1),
    )
