"""TorchScript export of a CG potential for OpenMM-Torch.

The exported module follows the openmmtorch contract ``forward(positions[N, 3], box[3, 3])
-> energy`` in nm and kJ/mol (use ``TorchForce.setUsesPeriodicBoundaryConditions(True)``),
with the bead types and units baked in. ``bead_energies(positions, box)`` gives per-bead
energies and, for an ensemble, ``member_bead_energies(positions, box)`` each member's.

In MD, consecutive calls see nearly the same positions, so the module keeps a Verlet list:
the pairs within cutoff + skin, found by the cell list, are reused while no bead has moved
more than skin / 2 since they were found (and the box is unchanged); each call only keeps
the listed pairs within the cutoff. The list is sorted by (first, second), so the pairs,
and hence the energies and forces, are bit-for-bit those of a freshly built list: a run
restarted from a checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cgkd.models.neighbors import canonical_order, pair_search, perpendicular_widths
from cgkd.models.potential import CGPotential

#: Default Verlet skin (nm): pairs within cutoff + skin are listed and reused.
DEFAULT_SKIN = 0.1


class OpenMMPotential(nn.Module):
    """A CG potential for one system, called with one frame in float64 (OpenMM's CPU types).

    Args:
        potential: the model (single network or ensemble, with its priors).
        species: [N] bead types.
        skin: Verlet skin in nm (0: search the pairs at every call).
    """

    def __init__(self, potential: CGPotential, species: Tensor, skin: float = DEFAULT_SKIN):
        super().__init__()
        if skin < 0:
            raise ValueError(f"Verlet skin {skin} nm is negative; use 0 or more")
        self.potential = potential
        self.register_buffer("species", species.to(torch.long))
        self.length_unit = "nm"
        self.energy_unit = "kJ/mol"
        self.n_members = len(potential.networks)
        self.cutoff = float(potential.cutoff)
        self.skin = float(skin)
        # The Verlet list: positions and box it was built for, pairs and their lattice shifts.
        self.list_positions = torch.zeros(0, 3)
        self.list_box = torch.zeros(3, 3)
        self.list_skin = 0.0
        self.list_first = torch.zeros(0, dtype=torch.long)
        self.list_second = torch.zeros(0, dtype=torch.long)
        self.list_shifts = torch.zeros(0, 3)
        self.list_builds = 0

    def forward(self, positions: Tensor, box: Tensor) -> Tensor:
        """Total energy (kJ/mol) of bead positions [N, 3] in a periodic box [3, 3] (nm)."""
        return self.bead_energies(positions, box).sum()

    @torch.jit.export
    def bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies [N] (kJ/mol), float64."""
        return self.member_bead_energies(positions, box).mean(0)

    @torch.jit.export
    def member_bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies of every ensemble member, [K, N] (kJ/mol), float64."""
        x = positions.to(torch.float32)
        b = box.to(torch.float32)
        pairs = self._pairs(x, b)
        energies = self.potential.member_bead_energies(
            x.unsqueeze(0), b.unsqueeze(0), self.species, pairs
        )
        return energies[:, 0].to(torch.float64)

    def _pairs(self, x: Tensor, box: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Directed pairs within the cutoff (first, second, vectors x_second - x_first, nm),
        sorted by (first, second), from the Verlet list (rebuilt when stale)."""
        # Under no_grad, not with detach(): called from C++ (openmmtorch), tensors made from
        # detach() inside a scripted method can still require grad and tie calls together.
        with torch.no_grad():
            if self._stale(x, box):
                self._rebuild(x, box)
        vectors = (
            x.index_select(0, self.list_second)
            - x.index_select(0, self.list_first)
            - self.list_shifts @ box
        )
        keep = torch.nonzero(torch.sum(vectors * vectors, dim=1) < self.cutoff**2).view(-1)
        return (
            self.list_first.index_select(0, keep),
            self.list_second.index_select(0, keep),
            vectors.index_select(0, keep),
        )

    def _stale(self, x: Tensor, box: Tensor) -> bool:
        """Whether the list must be rebuilt: none yet, a new box, or a bead moved > skin / 2."""
        if self.list_positions.shape[0] != x.shape[0] or not torch.equal(self.list_box, box):
            return True
        moved = x - self.list_positions
        return bool(torch.max(torch.sum(moved * moved, dim=1)) > (0.5 * self.list_skin) ** 2)

    def _rebuild(self, x: Tensor, box: Tensor) -> None:
        """List the pairs within cutoff + skin (the skin shrunk to fit a small box)."""
        half_width = 0.5 * float(perpendicular_widths(box.unsqueeze(0)).min())
        if self.cutoff >= half_width:
            raise ValueError(
                f"model cutoff {self.cutoff} nm is not below half the smallest box width "
                f"{2 * half_width} nm; use a larger system or a smaller cutoff"
            )
        skin = min(self.skin, 0.99 * (half_width - self.cutoff))
        index, shifts, _ = pair_search(x.unsqueeze(0), box.unsqueeze(0), self.cutoff + skin)
        order = canonical_order(index[:, 1], index[:, 2], x.shape[0])
        self.list_first = index[:, 1].index_select(0, order)
        self.list_second = index[:, 2].index_select(0, order)
        self.list_shifts = shifts.index_select(0, order)
        self.list_positions = x.clone()
        self.list_box = box.clone()
        self.list_skin = skin
        self.list_builds += 1


def export_torchscript(
    potential: CGPotential,
    species: Tensor,
    path: Path,
    metadata: dict[str, Any] | None = None,
    skin: float = DEFAULT_SKIN,
) -> Path:
    """Script ``potential`` for the bead types ``species`` with a Verlet ``skin`` (nm) and save
    it (atomic) with ``metadata`` (units, bead types, config) as the extra file
    ``metadata.json``."""
    path = Path(path)
    module = torch.jit.script(OpenMMPotential(potential.eval(), species, skin))
    info = {
        "length_unit": "nm",
        "energy_unit": "kJ/mol",
        "n_beads": int(species.numel()),
        "n_members": len(potential.networks),
        "cutoff_nm": float(potential.cutoff),
        "verlet_skin_nm": float(skin),
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
