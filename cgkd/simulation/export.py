"""TorchScript export of a CG potential for OpenMM-Torch.

The exported module follows the openmmtorch contract ``forward(positions[N, 3], box[3, 3])``
in nm and kJ/mol (use ``TorchForce.setUsesPeriodicBoundaryConditions(True)``), with the bead
types and units baked in. ``bead_energies(positions, box)`` gives per-bead energies and,
for an ensemble, ``member_bead_energies(positions, box)`` each member's. Two flavours:

* plain (:class:`OpenMMPotential`): ``forward`` returns the energy and OpenMM takes the
  forces from autograd. Pure TorchScript: any openmmtorch loads it, on any platform.
* fused (:class:`cgkd.simulation.fused.FusedOpenMMPotential`): ``forward`` returns
  ``(energy, forces)`` (``TorchForce.setOutputsForces(True)``), computed by the fused CPU
  kernels of :mod:`cgkd.ops` in a few passes over the pairs per interaction layer; several
  times faster on the CPU. It needs those kernels loaded (``torch.ops.load_library``) before
  OpenMM reads the file. The file's metadata says which flavour it is (``outputs_forces``).

In MD, consecutive calls see nearly the same positions, so both keep a Verlet list
(:class:`VerletList`): the pairs within cutoff + skin, found by the cell list, are reused
while no bead has moved more than skin / 2 since they were found (and the box is
unchanged). The list is sorted by (first, second) and only its pairs within the cutoff
count, so the energies and forces are bit-for-bit those of a freshly built list: a run
restarted from a checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cgkd.geometry import pair_search, perpendicular_widths
from cgkd.models.neighbors import canonical_order
from cgkd.models.potential import CGPotential

#: Default Verlet skin (nm): pairs within cutoff + skin are listed and reused.
DEFAULT_SKIN = 0.1


class VerletList(nn.Module):
    """Pairs within ``cutoff`` + ``skin`` (nm) of one system, kept between calls.

    ``half``: every pair once (first < second) instead of in both directions. With
    ``excluded_keys`` (sorted flat keys first * N + second of both orders), :attr:`excluded`
    flags the listed pairs they name.
    """

    def __init__(self, cutoff: float, skin: float, half: bool, excluded_keys: Tensor):
        super().__init__()
        if skin < 0:
            raise ValueError(f"Verlet skin {skin} nm is negative; use 0 or more")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.half = half
        self.register_buffer("excluded_keys", excluded_keys.to(torch.long))
        # The list: positions and box it was built for, the skin used, pairs and lattice shifts
        # (x_second - x_first - shifts @ box is the pair vector).
        self.positions = torch.zeros(0, 3)
        self.box = torch.zeros(3, 3)
        self.used_skin = 0.0
        self.first = torch.zeros(0, dtype=torch.long)
        self.second = torch.zeros(0, dtype=torch.long)
        self.shifts = torch.zeros(0, 3)
        self.excluded = torch.zeros(0, dtype=torch.bool)
        self.builds = 0

    def update(self, x: Tensor, box: Tensor) -> None:
        """Rebuild the list if it is stale for positions ``x`` [N, 3] in ``box`` [3, 3] (nm)."""
        # Under no_grad, not with detach(): called from C++ (openmmtorch), tensors made from
        # detach() inside a scripted method can still require grad and tie calls together.
        with torch.no_grad():
            if self._stale(x, box):
                self._rebuild(x, box)

    def _stale(self, x: Tensor, box: Tensor) -> bool:
        """Whether the list must be rebuilt: none yet, a new box, or a bead moved > skin / 2."""
        if self.positions.shape[0] != x.shape[0] or not torch.equal(self.box, box):
            return True
        moved = x - self.positions
        return bool(torch.max(torch.sum(moved * moved, dim=1)) > (0.5 * self.used_skin) ** 2)

    def _rebuild(self, x: Tensor, box: Tensor) -> None:
        """List the pairs within cutoff + skin (the skin shrunk to fit a small box)."""
        half_width = 0.5 * float(perpendicular_widths(box.unsqueeze(0)).min())
        if self.cutoff >= half_width:
            raise ValueError(
                "model cutoff "
                + str(self.cutoff)
                + " nm is not below half the smallest box width ("
                + str(round(half_width * 1000.0) / 1000.0)
                + " nm, half of "
                + str(round(2.0 * half_width * 1000.0) / 1000.0)
                + " nm); use a larger system or a smaller cutoff"
            )
        skin = min(self.skin, 0.99 * (half_width - self.cutoff))
        self.first, self.second, self.shifts = self._search(x, box, self.cutoff + skin)
        keys = self.first * x.shape[0] + self.second
        self.excluded = torch.isin(keys, self.excluded_keys)
        self.positions = x.clone()
        self.box = box.clone()
        self.used_skin = skin
        self.builds += 1

    def _search(self, x: Tensor, box: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
        """The pairs within ``cutoff`` sorted by (first, second), with their lattice shifts."""
        index, shifts, _ = pair_search(
            x.unsqueeze(0), box.unsqueeze(0), cutoff, both_directions=not self.half
        )
        first, second = index[:, 1], index[:, 2]
        if self.half:  # first < second, so that the sorted list is unique
            swap = first > second
            first, second = torch.where(swap, second, first), torch.where(swap, first, second)
            shifts = torch.where(swap.unsqueeze(1), -shifts, shifts)
        order = canonical_order(first, second, x.shape[0])
        return first.index_select(0, order), second.index_select(0, order), shifts[order]


class KernelVerletList(VerletList):
    """A half :class:`VerletList` built by the cell list of the fused kernels (the same pairs,
    in the same order, several times faster)."""

    def __init__(self, cutoff: float, skin: float, excluded_keys: Tensor):
        super().__init__(cutoff, skin, True, excluded_keys)

    def _search(self, x: Tensor, box: Tensor, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
        return torch.ops.cgkd.half_pairs(x, box, cutoff)


class OpenMMPotential(nn.Module):
    """A CG potential for one system, called with one frame in float64 (OpenMM's CPU types);
    ``forward`` returns the energy (forces by autograd).

    Args:
        potential: the model (single network or ensemble, with its priors).
        species: [N] bead types.
        skin: Verlet skin in nm (0: search the pairs at every call).
    """

    def __init__(self, potential: CGPotential, species: Tensor, skin: float = DEFAULT_SKIN):
        super().__init__()
        self.potential = potential
        self.register_buffer("species", species.to(torch.long))
        self.length_unit = "nm"
        self.energy_unit = "kJ/mol"
        self.n_members = len(potential.networks)
        self.cutoff = float(potential.cutoff)
        self.verlet = VerletList(self.cutoff, skin, False, torch.zeros(0, dtype=torch.long))

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
        pairs = self.pairs(x, b)
        energies = self.potential.member_bead_energies(
            x.unsqueeze(0), b.unsqueeze(0), self.species, pairs
        )
        return energies[:, 0].to(torch.float64)

    @torch.jit.export
    def pairs(self, x: Tensor, box: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Directed pairs within the cutoff (first, second, vectors x_second - x_first, nm),
        sorted by (first, second), from the Verlet list (rebuilt when stale)."""
        self.verlet.update(x, box)
        vectors = (
            x.index_select(0, self.verlet.second)
            - x.index_select(0, self.verlet.first)
            - self.verlet.shifts @ box
        )
        keep = torch.nonzero(torch.sum(vectors * vectors, dim=1) < self.cutoff**2).view(-1)
        return (
            self.verlet.first.index_select(0, keep),
            self.verlet.second.index_select(0, keep),
            vectors.index_select(0, keep),
        )


def export_torchscript(
    potential: CGPotential,
    species: Tensor,
    path: Path,
    metadata: dict[str, Any] | None = None,
    skin: float = DEFAULT_SKIN,
    fused: bool = False,
) -> Path:
    """Script ``potential`` for the bead types ``species`` with a Verlet ``skin`` (nm) and save
    it (atomic) with ``metadata`` (units, bead types, config) as the extra file
    ``metadata.json``. ``fused``: the :class:`FusedOpenMMPotential` flavour (builds and loads
    the kernels of :mod:`cgkd.ops`; forward returns energy and forces)."""
    path = Path(path)
    potential = potential.eval()
    if fused:
        from cgkd import ops
        from cgkd.simulation.fused import FusedOpenMMPotential

        ops.library_path()
        module = torch.jit.script(FusedOpenMMPotential(potential, species, skin))
    else:
        module = torch.jit.script(OpenMMPotential(potential, species, skin))
    info = {
        "length_unit": "nm",
        "energy_unit": "kJ/mol",
        "n_beads": int(species.numel()),
        "n_members": len(potential.networks),
        "cutoff_nm": float(potential.cutoff),
        "verlet_skin_nm": float(skin),
        "outputs_forces": fused,
        "kernels": "cgkd_ops" if fused else None,
    }
    info.update(metadata or {})
    temporary = path.with_name(path.name + ".tmp")
    torch.jit.save(module, str(temporary), _extra_files={"metadata.json": json.dumps(info)})
    os.replace(temporary, path)
    return path


def fused_path(path: Path) -> Path:
    """Where the fused flavour of the plain export at ``path`` goes: ``<stem>_fused.ts``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_fused{path.suffix}")


def export_flavours(
    potential: CGPotential,
    species: Tensor,
    path: Path,
    metadata: dict[str, Any] | None = None,
    skin: float = DEFAULT_SKIN,
) -> dict[str, str | None]:
    """The plain export at ``path`` and, where the fused kernels build here and the potential
    is networks and priors, the fused one at
    :func:`fused_path` (else None, and any stale fused file is removed):
    ``{"plain": ..., "fused": ...}``."""
    from cgkd import ops

    plain = export_torchscript(potential, species, path, metadata, skin)
    fused = fused_path(plain)
    if potential.networks and not potential.use_pair_table and ops.available():
        export_torchscript(potential, species, fused, metadata, skin, fused=True)
        return {"plain": str(plain), "fused": str(fused)}
    fused.unlink(missing_ok=True)
    return {"plain": str(plain), "fused": None}


def is_fused(path: Path) -> bool:
    """Whether a model file is a fused export (forward returns energy and forces, and the
    kernels of :mod:`cgkd.ops` must be loaded first); False for any other TorchScript file."""
    try:
        return bool(read_export_metadata(path).get("outputs_forces"))
    except ValueError:
        return False  # not exported by cgkd: a plain energy model


def load_exported(path: Path) -> torch.jit.ScriptModule:
    """A model file, with the fused kernels loaded first when it needs them."""
    if is_fused(path):
        from cgkd import ops

        ops.library_path()
    return torch.jit.load(str(path))


def read_export_metadata(path: Path) -> dict[str, Any]:
    """The ``metadata.json`` stored in an exported model file (read without loading the
    model, so a fused file's metadata is readable before its kernels are loaded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/extra/metadata.json")), None)
            if name is None:
                raise ValueError(f"{path} holds no metadata.json; it was not exported by cgkd")
            return json.loads(archive.read(name))
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a TorchScript file") from None
