"""TorchScript export of a CG potential for OpenMM-Torch.

The exported module follows the openmmtorch contract ``forward(positions[N, 3], box[3, 3])``
in nm and kJ/mol (use ``TorchForce.setUsesPeriodicBoundaryConditions(True)``), with the bead
types and units baked in. ``bead_energies(positions, box)`` gives per-bead energies and,
for an ensemble, ``member_bead_energies(positions, box)`` each member's. Two flavours:

* plain (:class:`OpenMMPotential`): ``forward`` returns the energy and OpenMM takes the
  forces from autograd. Pure TorchScript: any openmmtorch loads it, on any platform.
* fused (:class:`FusedOpenMMPotential`): ``forward`` returns ``(energy, forces)``
  (``TorchForce.setOutputsForces(True)``), computed by the fused CPU kernels of
  :mod:`cgkd.ops` in a few passes over the pairs per interaction layer; several times faster
  on the CPU. It needs those kernels loaded (``torch.ops.load_library``) before OpenMM reads
  the file. The file's metadata says which flavour it is
  (``outputs_forces``).

In MD, consecutive calls see nearly the same positions, so both keep a Verlet list
(:class:`VerletList`): the pairs within cutoff + skin, found by the cell list, are reused
while no bead has moved more than skin / 2 since they were found (and the box is
unchanged). The list is sorted by (first, second) and only its pairs within the cutoff
count, so the energies and forces are bit-for-bit those of a freshly built list: a run
restarted from a checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cgkd.geometry import pair_search, perpendicular_widths
from cgkd.models.hipnn import HipnnTS
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


def fused_network(network: HipnnTS, dtype: torch.dtype) -> nn.Module:
    """The network as the fused kernels evaluate it: :class:`FusedNetwork` for one interaction
    block (every layer in the kernels), :class:`FusedDeepNetwork` for more."""
    if len(network.blocks) == 1:
        return FusedNetwork(network, dtype)
    return FusedDeepNetwork(network, dtype)


class FusedNetwork(nn.Module):
    """One one-block HIP-NN-TS network's parameters as the fused kernels take them (frozen)."""

    def __init__(self, network: HipnnTS, dtype: torch.dtype):
        super().__init__()
        if len(network.blocks) != 1:
            raise ValueError(
                f"FusedNetwork evaluates one-block networks, not {len(network.blocks)} blocks; "
                "use fused_network"
            )
        block = network.blocks[0]
        layer = block.interaction
        with torch.no_grad():
            eye = torch.eye(network.n_species, dtype=layer.pair_weights.dtype)
            tensors = {
                "inverse_mu": layer.sensitivity.inverse_mu,
                "sigma": layer.sensitivity.sigma,
                "pair_weights": layer.pair_weights,  # [nu, S, F]
                "constants": layer.self_interaction(eye),  # [S, F]: W one_hot + B
                "tensor_weights": layer.tensor_weights,
                "atom_weights": torch.stack(
                    [atom.weight for atom in block.atom_layers]
                    or [layer.pair_weights.new_zeros(0, layer.n_out, layer.n_out)]
                ).reshape(-1, layer.n_out, layer.n_out),
                "atom_biases": torch.stack(
                    [atom.bias for atom in block.atom_layers]
                    or [layer.pair_weights.new_zeros(0, layer.n_out)]
                ).reshape(-1, layer.n_out),
                "readout": network.readouts[0].weight[0],
                "species_energy": network.species_energy.weight[0],
            }
            for name, tensor in tensors.items():
                self.register_buffer(name, tensor.detach().to(dtype).clone())
            self.readout_bias = float(network.readouts[0].bias[0])
            self.energy_scale = float(network.energy_scale)
        self.order = int(network.tensor_order)
        self.n_species = int(network.n_species)

    def pair_sums(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> Tensor:
        """The first layer's pair sums [N, S, 1 | 4 | 9, nu] over the listed pairs within
        ``cutoff``."""
        return torch.ops.cgkd.environment(
            x,
            box,
            verlet.first,
            verlet.second,
            verlet.shifts,
            species,
            self.inverse_mu,
            self.sigma,
            verlet.cutoff,
            self.order,
            self.n_species,
        )

    def energies(self, sums: Tensor, species: Tensor, with_gradient: bool) -> tuple[Tensor, Tensor]:
        """Bead energies [N] (kJ/mol) from the pair sums and, ``with_gradient``, the gradient
        of their sum w.r.t. the pair sums."""
        return torch.ops.cgkd.dense(
            sums,
            species,
            self.pair_weights,
            self.constants,
            self.tensor_weights,
            self.atom_weights,
            self.atom_biases,
            self.readout,
            self.readout_bias,
            self.species_energy,
            self.energy_scale,
            with_gradient,
        )

    def gradient(
        self, grad_sums: Tensor, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> Tensor:
        """dE/dx [N, 3] from dE/d(pair sums)."""
        return torch.ops.cgkd.environment_backward(
            grad_sums,
            x,
            box,
            verlet.first,
            verlet.second,
            verlet.shifts,
            species,
            self.inverse_mu,
            self.sigma,
            verlet.cutoff,
            self.order,
        )

    def energies_and_gradient(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Bead energies [N] (kJ/mol) and the gradient of their sum [N, 3] (kJ/mol/nm)."""
        with torch.no_grad():
            sums = self.pair_sums(x, box, verlet, species)
            energies, grad_sums = self.energies(sums, species, True)
            return energies, self.gradient(grad_sums, x, box, verlet, species)

    def bead_energies(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> Tensor:
        """Bead energies [N] (kJ/mol)."""
        with torch.no_grad():
            return self.energies(self.pair_sums(x, box, verlet, species), species, False)[0]


class FusedDeepNetwork(nn.Module):
    """A HIP-NN-TS network of several interaction blocks, its pair sums in the fused kernels.

    The first layer's pair sums come from ``environment`` (it reads one-hot species), each
    deeper layer's from ``feature_environment`` on the previous block's features projected by
    its pair weights. What is per bead (the layers' combination of their sums, the atom
    layers, the readouts) runs in TorchScript, with autograd giving the gradient of the energy
    w.r.t. every layer's pair sums and projected features; the backward kernels turn those
    into dE/dx, deepest layer first. Frozen copy of the network, in ``dtype``.
    """

    def __init__(self, network: HipnnTS, dtype: torch.dtype):
        super().__init__()
        net = copy.deepcopy(network).to(dtype)
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        self.first_block = net.blocks[0]
        self.first_readout = net.readouts[0]
        self.deeper_blocks = nn.ModuleList(list(net.blocks)[1:])
        self.deeper_readouts = nn.ModuleList(list(net.readouts)[1:])
        self.species_energy = net.species_energy
        first = net.blocks[0].interaction
        # [nu * S, F]: the first layer's pair weights, sensitivity-major like its pair sums.
        self.register_buffer("first_weights", first.pair_weights.reshape(-1, first.n_out).clone())
        self.energy_scale = float(net.energy_scale)
        self.order = int(net.tensor_order)
        self.n_species = int(net.n_species)

    def _energies(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor, grad: bool
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """Bead energies [N] and, per layer (first to last), its pair sums and, for the deeper
        layers, their projected features and sensitivity parameters (mu^-1, sigma); with
        ``grad`` the pair sums are autograd leaves."""
        # The kernels run under no_grad: their outputs are leaves, whatever the (loaded)
        # parameters' requires_grad; autograd reaches them only as inputs.
        first = self.first_block.interaction
        with torch.no_grad():
            sums = torch.ops.cgkd.environment(
                x,
                box,
                verlet.first,
                verlet.second,
                verlet.shifts,
                species,
                first.sensitivity.inverse_mu,
                first.sensitivity.sigma,
                verlet.cutoff,
                self.order,
                self.n_species,
            )
        sums.requires_grad_(grad)
        n = x.shape[0]
        one_hot = nn.functional.one_hot(species, self.n_species).to(x.dtype)
        h = sums.permute(0, 2, 3, 1).reshape(n, sums.shape[2], -1) @ self.first_weights
        features = self.first_block.atoms(first.combine(one_hot, h))
        energies = self.species_energy(one_hot).squeeze(-1) + self.first_readout(features).squeeze(
            -1
        )
        layer_sums = [sums]
        projections: list[Tensor] = []
        inverse_mus: list[Tensor] = []
        sigmas: list[Tensor] = []
        for block, readout in zip(self.deeper_blocks, self.deeper_readouts, strict=True):
            layer = block.interaction
            weights = layer.pair_weights.permute(1, 0, 2).reshape(layer.n_in, -1)
            projected = (features @ weights).view(n, layer.n_sensitivities, layer.n_out)
            with torch.no_grad():
                deeper = torch.ops.cgkd.feature_environment(
                    x,
                    box,
                    verlet.first,
                    verlet.second,
                    verlet.shifts,
                    projected,
                    layer.sensitivity.inverse_mu,
                    layer.sensitivity.sigma,
                    verlet.cutoff,
                    self.order,
                )
            deeper.requires_grad_(grad)
            features = block.atoms(layer.combine(features, deeper))
            energies = energies + readout(features).squeeze(-1)
            layer_sums.append(deeper)
            projections.append(projected)
            inverse_mus.append(layer.sensitivity.inverse_mu)
            sigmas.append(layer.sensitivity.sigma)
        return energies * self.energy_scale, layer_sums, projections, inverse_mus, sigmas

    def energies_and_gradient(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Bead energies [N] (kJ/mol) and the gradient of their sum [N, 3] (kJ/mol/nm); needs
        gradients enabled (OpenMM enables them)."""
        if not torch.is_grad_enabled():
            raise RuntimeError("call forward with gradients enabled (deep fused networks)")
        energies, sums, projections, inverse_mus, sigmas = self._energies(
            x, box, verlet, species, True
        )
        gradient = torch.zeros_like(x)
        # Deepest layer first: its pair sums' gradient comes from the energy alone; each
        # shallower one's also through the deeper layers' projected features.
        total = energies.sum()
        outputs = [total]
        grad_outputs: list[Tensor | None] = [torch.ones_like(total)]
        for k in range(len(projections) - 1, -1, -1):
            grad_sums = torch.autograd.grad(outputs, [sums[k + 1]], grad_outputs, True)[0]
            assert grad_sums is not None
            with torch.no_grad():
                x_gradient, grad_projected = torch.ops.cgkd.feature_environment_backward(
                    grad_sums,
                    x,
                    box,
                    verlet.first,
                    verlet.second,
                    verlet.shifts,
                    projections[k],
                    inverse_mus[k],
                    sigmas[k],
                    verlet.cutoff,
                    self.order,
                )
            gradient = gradient + x_gradient
            outputs.append(projections[k])
            grad_outputs.append(grad_projected)
        grad_first = torch.autograd.grad(outputs, [sums[0]], grad_outputs)[0]
        assert grad_first is not None
        first = self.first_block.interaction
        with torch.no_grad():
            gradient = gradient + torch.ops.cgkd.environment_backward(
                grad_first,
                x,
                box,
                verlet.first,
                verlet.second,
                verlet.shifts,
                species,
                first.sensitivity.inverse_mu,
                first.sensitivity.sigma,
                verlet.cutoff,
                self.order,
            )
            return energies.detach(), gradient

    def bead_energies(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> Tensor:
        """Bead energies [N] (kJ/mol)."""
        with torch.no_grad():
            return self._energies(x, box, verlet, species, False)[0]


class FusedOpenMMPotential(nn.Module):
    """The same potential as :class:`OpenMMPotential`, evaluated by the fused CPU kernels
    (:mod:`cgkd.ops`, which must be loaded); ``forward`` returns ``(energy, forces)``.

    Per call and one-block member, three kernels: the pair sums of the first layer over the
    half Verlet list, the dense layers with their gradient w.r.t. those sums (derived by
    hand), and the forces from that gradient (:class:`FusedNetwork`); a member of several
    blocks adds two kernels per deeper layer (:class:`FusedDeepNetwork`). The repulsion prior
    is a kernel too; bonds and angles stay in TorchScript. Arithmetic in ``dtype`` (float32
    like the plain export, or float64).
    """

    def __init__(
        self,
        potential: CGPotential,
        species: Tensor,
        skin: float = DEFAULT_SKIN,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if potential.use_pair_table or not potential.networks:
            raise ValueError(
                "the fused kernels evaluate networks and priors, not pair tables; export a "
                "classical model with cgkd.simulation.native"
            )
        self.networks = nn.ModuleList([fused_network(net, dtype) for net in potential.networks])
        self.priors = copy.deepcopy(potential.priors).to(dtype)
        self.register_buffer("species", species.to(torch.long))
        self.length_unit = "nm"
        self.energy_unit = "kJ/mol"
        self.n_members = len(potential.networks)
        self.cutoff = float(potential.cutoff)
        self.dtype = dtype
        self.use_repulsion = bool(potential.use_priors and self.priors.use_repulsion)
        self.use_bonded = bool(
            potential.use_priors
            and (self.priors.bonds.pairs.shape[0] > 0 or self.priors.angles.triples.shape[0] > 0)
        )
        self.verlet = KernelVerletList(self.cutoff, skin, self.priors.excluded_keys)

    def forward(self, positions: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
        """Total energy (kJ/mol, float64 []) and forces (kJ/mol/nm, float64 [N, 3]) of bead
        positions [N, 3] in a periodic box [3, 3] (nm)."""
        with torch.no_grad():
            x = positions.to(self.dtype)
            b = box.to(self.dtype)
        self.verlet.update(x, b)
        energies, gradient = self._priors(x, b, True)
        for net in self.networks:
            member, member_gradient = net.energies_and_gradient(x, b, self.verlet, self.species)
            energies = energies + member / float(self.n_members)
            gradient = gradient + member_gradient / float(self.n_members)
        return energies.sum().to(torch.float64), (-gradient).to(torch.float64)

    @torch.jit.export
    def bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies [N] (kJ/mol), float64."""
        return self.member_bead_energies(positions, box).mean(0)

    @torch.jit.export
    def member_bead_energies(self, positions: Tensor, box: Tensor) -> Tensor:
        """Per-bead energies of every ensemble member, [K, N] (kJ/mol), float64."""
        with torch.no_grad():
            x = positions.to(self.dtype)
            b = box.to(self.dtype)
            self.verlet.update(x, b)
            prior, _ = self._priors(x, b, False)
            members: list[Tensor] = []
            for net in self.networks:
                members.append(net.bead_energies(x, b, self.verlet, self.species))
            return (torch.stack(members) + prior).to(torch.float64)

    def _priors(self, x: Tensor, box: Tensor, with_gradient: bool) -> tuple[Tensor, Tensor]:
        """Prior bead energies [N] (repulsion, bonds, angles) and, ``with_gradient``, the
        gradient of their sum [N, 3] (zeros otherwise)."""
        energies = torch.zeros(x.shape[0], dtype=x.dtype)
        gradient = torch.zeros_like(x)
        if self.use_repulsion:
            repulsion = self.priors.repulsion
            with torch.no_grad():
                energies, gradient = torch.ops.cgkd.repulsion(
                    x,
                    box,
                    self.verlet.first,
                    self.verlet.second,
                    self.verlet.shifts,
                    self.species,
                    self.verlet.excluded,
                    repulsion.sigma,
                    repulsion.epsilon,
                    repulsion.switch_factor,
                )
        if self.use_bonded:
            # Bonds and angles by autograd, which needs gradients enabled (OpenMM enables them).
            if with_gradient and not torch.is_grad_enabled():
                raise RuntimeError("call forward with gradients enabled (bonded priors)")
            bonded_x = x.detach().clone().requires_grad_(with_gradient)
            frame, frame_box = bonded_x.unsqueeze(0), box.unsqueeze(0)
            bonded = (self.priors.bonds(frame, frame_box) + self.priors.angles(frame, frame_box))[0]
            if with_gradient:
                bonded_gradient = torch.autograd.grad([bonded.sum()], [bonded_x])[0]
                assert bonded_gradient is not None
                gradient = gradient + bonded_gradient
            energies = energies + bonded.detach()
        return energies, gradient


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
