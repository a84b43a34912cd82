"""TorchScript export of a CG potential for OpenMM-Torch.

The exported module follows the openmmtorch contract ``forward(positions[N, 3], box[3, 3])
-> energy`` in nm and kJ/mol (use ``TorchForce.setUsesPeriodicBoundaryConditions(True)``),
with the bead types and units baked in. ``bead_energies(positions, box)`` gives per-bead
energies and, for an ensemble, ``member_bead_energies(positions, box)`` each member's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cgkd.models.potential import CGPotential


class OpenMMPotential(nn.Module):
    """A CG potential for one system, called with one frame in float64 (OpenMM's CPU types)."""

    def __init__(self, potential: CGPotential, species: Tensor):
        super().__init__()
        self.potential = potential
        self.register_buffer("species", species.to(torch.long))
        self.length_unit = "nm"
        self.energy_unit = "kJ/mol"
        self.n_members = len(potential.networks)

    def forward(self, positions: Tensor, box: Tensor) -> Tensor:
        """Total energy (kJ/mol) of bead positions [N, 3] in a periodic box [3, 3] (nm)."""
        return self.bead_energies(positions, box).sum()

    @torch.jit.export
    def bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies [N] (kJ/mol), float64."""
        x = positions.to(torch.float32).unsqueeze(0)
        b = box.to(torch.float32).unsqueeze(0)
        return self.potential(x, b, self.species)[0].to(torch.float64)

    @torch.jit.export
    def member_bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies of every ensemble member, [K, N] (kJ/mol), float64."""
        x = positions.to(torch.float32).unsqueeze(0)
        b = box.to(torch.float32).unsqueeze(0)
        energies = self.potential.member_bead_energies(x, b, self.species)
        return energies[:, 0].to(torch.float64)


def export_torchscript(
    potential: CGPotential, species: Tensor, path: Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Script ``potential`` for the bead types ``species`` and save it (atomic) with ``metadata``
    (units, bead types, config) stored as the extra file ``metadata.json``."""
    path = Path(path)
    module = torch.jit.script(OpenMMPotential(potential.eval(), species))
    info = {
        "length_unit": "nm",
        "energy_unit": "kJ/mol",
        "n_beads": int(species.numel()),
        "n_members": len(potential.networks),
    }
    info.update(metadata or {})
    temporary = path.with_name(path.name + ".tmp")
    torch.jit.save(module, str(temporary), _extra_files={"metadata.json": json.dumps(info)})
    os.replace(temporary, path)
    return path


def read_export_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata.json`` stored in an exported model file."""
    extra = {"metadata.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["metadata.json"])
