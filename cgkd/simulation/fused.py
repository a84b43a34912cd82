"""The fused flavour of an exported CG potential: the HIP-NN-TS networks and the repulsion
prior evaluated by the compiled CPU kernels of :mod:`cgkd.ops` (which must be loaded), with
``forward`` returning ``(energy, forces)``; see :mod:`cgkd.simulation.export`. Units: nm,
kJ/mol."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from cgkd.models.hipnn import HipnnTS, InteractionLayer
from cgkd.models.potential import CGPotential
from cgkd.simulation.export import DEFAULT_SKIN, KernelVerletList


def fused_network(network: HipnnTS, dtype: torch.dtype) -> nn.Module:
    """The network as the fused kernels evaluate it: :class:`FusedNetwork` for one interaction
    block (every layer in the kernels), :class:`FusedDeepNetwork` for more."""
    if len(network.blocks) == 1:
        return FusedNetwork(network, dtype)
    return FusedDeepNetwork(network, dtype)


class FirstLayerSums(nn.Module):
    """The first interaction layer's pair sums [N, S, 1 | 4 | 9, nu] over the listed pairs
    within the cutoff (kernel ``environment``) and dE/dx [N, 3] from their gradient
    (``environment_backward``), with the layer's sensitivities frozen in ``dtype``."""

    def __init__(self, layer: InteractionLayer, n_species: int, dtype: torch.dtype):
        super().__init__()
        for name in ("inverse_mu", "sigma"):
            tensor = getattr(layer.sensitivity, name)
            self.register_buffer(name, tensor.detach().to(dtype).clone())
        self.order = int(layer.order)
        self.n_species = n_species

    def forward(self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor) -> Tensor:
        """The pair sums of positions ``x`` [N, 3] in ``box`` (nm)."""
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
        self.first = FirstLayerSums(layer, int(network.n_species), dtype)

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

    def energies_and_gradient(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Bead energies [N] (kJ/mol) and the gradient of their sum [N, 3] (kJ/mol/nm)."""
        with torch.no_grad():
            sums = self.first(x, box, verlet, species)
            energies, grad_sums = self.energies(sums, species, True)
            return energies, self.first.gradient(grad_sums, x, box, verlet, species)

    def bead_energies(
        self, x: Tensor, box: Tensor, verlet: KernelVerletList, species: Tensor
    ) -> Tensor:
        """Bead energies [N] (kJ/mol)."""
        with torch.no_grad():
            return self.energies(self.first(x, box, verlet, species), species, False)[0]


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
        self.first_sums = FirstLayerSums(first, int(net.n_species), dtype)
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
            sums = self.first_sums(x, box, verlet, species)
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
        with torch.no_grad():
            gradient = gradient + self.first_sums.gradient(grad_first, x, box, verlet, species)
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
