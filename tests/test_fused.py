"""The fused CPU kernels (cgkd.ops) against the reference implementation: the same pairs, the
same energies and forces in float64 (orthorhombic and triclinic boxes, every tensor order,
several species, ensembles, every prior), bit-for-bit Verlet-list reuse, and the fused
export in OpenMM agreeing with the plain one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from conftest import NETWORK, PRIOR, random_liquid

from cgkd import ops
from cgkd.models.checkpoint import build_potential
from cgkd.models.potential import CGPotential
from cgkd.simulation.export import (
    KernelVerletList,
    VerletList,
    export_flavours,
    is_fused,
    load_exported,
)
from cgkd.simulation.fused import FusedOpenMMPotential
from cgkd.simulation.md import KERNELS, MDSettings, model_file, model_forces
from cgkd.simulation.system import build_system

ONE_BLOCK = {**NETWORK, "n_interactions": 1}
#: Two rods (bonded chains of three beads) among the 40 beads of the test liquid.
BONDED_PRIOR = {
    **PRIOR,
    "exclusions": [[0, 2], [0, 4], [2, 4], [1, 3], [1, 5], [3, 5]],
    "bonds": {
        "beads": [[0, 2], [2, 4], [1, 3], [3, 5]],
        "kind": [0, 0, 1, 1],
        "names": ["A-A", "B-B"],
        "centre": [0.35, 0.4],
        "k": [800.0, 600.0],
    },
    "angles": {
        "beads": [[0, 2, 4], [1, 3, 5]],
        "kind": [0, 1],
        "names": ["A-A-A", "B-B-B"],
        "centre": [2.5, 2.8],
        "k": [40.0, 30.0],
    },
}
TRICLINIC = np.array([[1.6, 0.0, 0.0], [0.5, 1.5, 0.0], [-0.4, 0.3, 1.45]])


@pytest.fixture(scope="module", autouse=True)
def kernels():
    """Build (or reuse) and load the kernel library once for this module."""
    return ops.library_path()


def reference(potential: CGPotential, x: torch.Tensor, box: torch.Tensor, species: torch.Tensor):
    """Energy and forces of the reference implementation (autograd), float64."""
    positions = x.clone().requires_grad_(True)
    energy = potential(positions.unsqueeze(0), box.unsqueeze(0), species).sum()
    (gradient,) = torch.autograd.grad(energy, positions)
    return energy.detach(), -gradient


def triclinic_liquid(n_beads: int = 40, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Beads spread over the triclinic TRICLINIC box (no pair closer than 0.22 nm)."""
    fractional = random_liquid(n_beads, 1.0, seed, min_distance=0.16)
    return torch.as_tensor(fractional @ TRICLINIC), torch.as_tensor(TRICLINIC)


def random_potential(
    order: int, members: int, prior: dict | None, atom_layers: int = 1, blocks: int = 1
):
    network = {
        **ONE_BLOCK,
        "tensor_order": order,
        "n_atom_layers": atom_layers,
        "n_interactions": blocks,
    }
    potential = build_potential([network] * members, prior, seeds=list(range(members))).double()
    with torch.no_grad():
        for net in potential.networks:
            for block in net.blocks:
                block.interaction.tensor_weights.normal_()
            net.energy_scale.fill_(10.0)
    return potential


@pytest.mark.parametrize(
    ("order", "members", "prior", "atom_layers", "blocks"),
    [
        (2, 1, None, 1, 1),
        (1, 2, PRIOR, 2, 1),
        (0, 1, PRIOR, 0, 1),
        (2, 2, BONDED_PRIOR, 1, 1),
        (2, 1, PRIOR, 1, 2),
        (1, 2, None, 0, 3),
        (0, 1, BONDED_PRIOR, 2, 2),
    ],
    ids=[
        "l2",
        "l1-ensemble-repulsion",
        "l0-no-atom-layers",
        "l2-ensemble-bonded",
        "l2-two-blocks",
        "l1-ensemble-three-blocks",
        "l0-two-blocks-bonded",
    ],
)
@pytest.mark.parametrize("cell", ["cubic", "triclinic"])
def test_fused_energies_and_forces_equal_the_reference(
    liquid, order, members, prior, atom_layers, blocks, cell
):
    positions, box, species = liquid
    x, b = (positions[0], box[0]) if cell == "cubic" else triclinic_liquid()
    potential = random_potential(order, members, prior, atom_layers, blocks)
    fused = torch.jit.script(FusedOpenMMPotential(potential, species, dtype=torch.float64))
    energy, forces = fused(x, b)
    expected_energy, expected_forces = reference(potential, x, b, species)
    scale = float(expected_forces.abs().max())
    assert scale > 1.0  # the test liquid feels real forces
    torch.testing.assert_close(energy, expected_energy, rtol=1e-11, atol=1e-9)
    torch.testing.assert_close(forces, expected_forces, rtol=0, atol=1e-10 * scale)
    bead_energies = fused.member_bead_energies(x, b)
    torch.testing.assert_close(bead_energies.mean(0).sum(), expected_energy, rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("cell", ["cubic", "triclinic", "small"])
def test_kernel_cell_list_finds_the_pairs_of_the_reference_search(liquid, cell):
    positions, box, _ = liquid
    x, b = (positions[0], box[0]) if cell != "triclinic" else triclinic_liquid()
    cutoff = 0.7
    if cell == "small":  # two cells along each vector: neighbour cells meet themselves
        x, b, cutoff = x * (1.3 / 1.5), b * (1.3 / 1.5), 0.6
    empty = torch.zeros(0, dtype=torch.long)
    expected = VerletList(cutoff, 0.0, True, empty)._search(x.float(), b.float(), cutoff)
    found = KernelVerletList(cutoff, 0.0, empty)._search(x.float(), b.float(), cutoff)
    assert expected[0].numel() > 100
    for a, e in zip(found, expected, strict=True):
        assert torch.equal(a, e)
    first, second, shifts = found
    vectors = x.float()[second] - x.float()[first] - shifts @ b.float()
    assert bool(torch.all(torch.linalg.norm(vectors, dim=1) < cutoff))


def test_reused_verlet_list_gives_the_forces_of_a_fresh_one_bit_for_bit(liquid):
    positions, box, species = liquid
    potential = random_potential(2, 1, PRIOR).float()
    reused = torch.jit.script(FusedOpenMMPotential(potential, species))
    rng = np.random.default_rng(0)
    x = positions[0].clone()
    for _ in range(8):
        x = x + torch.as_tensor(rng.normal(0.0, 0.01, x.shape))
        fresh = torch.jit.script(FusedOpenMMPotential(potential, species))
        for a, b in zip(reused(x, box[0]), fresh(x, box[0]), strict=True):
            assert torch.equal(a, b)
    assert 1 < reused.verlet.builds < 8  # the list was reused and rebuilt when it had to be


def test_fused_export_runs_in_openmm_like_the_plain_one(liquid, tmp_path):
    positions, box, species = liquid
    potential = random_potential(2, 2, PRIOR).float()
    exported = export_flavours(
        potential, species, tmp_path / "model.ts", {"type_names": ["A", "B"]}
    )
    assert exported["fused"] is not None and is_fused(exported["fused"])
    assert not is_fused(exported["plain"])
    results = []
    for path in (exported["plain"], exported["fused"]):
        system = build_system(path, np.full(40, 18.0), box[0].numpy())
        context = openmm.Context(
            system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU")
        )
        context.setPositions(positions[0].numpy())
        state = context.getState(getEnergy=True, getForces=True)
        results.append(
            (
                state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole),
                np.asarray(state.getForces(asNumpy=True)._value),
            )
        )
    (plain_energy, plain_forces), (fused_energy, fused_forces) = results
    assert abs(fused_energy - plain_energy) < 1e-4 * abs(plain_energy) + 1e-3
    np.testing.assert_allclose(
        fused_forces, plain_forces, rtol=0, atol=1e-4 * np.abs(plain_forces).max()
    )
    module = load_exported(exported["fused"])
    assert module.member_bead_energies(positions[0], box[0]).shape == (2, 40)


def test_deep_networks_get_a_fused_export_like_their_plain_one(liquid, tmp_path, capfd):
    """A network of two interaction blocks is exported fused too, and OpenMM's forces from it
    are the plain export's (float32), with no kernel in autograd's graph (loaded by OpenMM,
    the parameters require grad: PyTorch would warn on every call that it cannot backprop
    through a kernel)."""
    positions, box, species = liquid
    potential = random_potential(2, 2, PRIOR, blocks=2).float()
    exported = export_flavours(potential, species, tmp_path / "deep.ts")
    assert exported["fused"] is not None and is_fused(exported["fused"])
    x, b, masses = positions.numpy(), box.numpy(), np.full(40, 18.0)
    plain = model_forces(Path(exported["plain"]), x, b, masses)
    capfd.readouterr()
    fused = model_forces(Path(exported["fused"]), x, b, masses)
    assert "autograd kernel was not registered" not in capfd.readouterr().err
    scale = np.abs(plain).max()
    assert scale > 1.0
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-4 * scale)


def test_simulate_kernels_setting_picks_the_export_to_run(tmp_path):
    plain, fused = tmp_path / "m.ts", tmp_path / "m_fused.ts"
    plain.touch()
    settings = {kernels: MDSettings(kernels=kernels, platform="CPU") for kernels in KERNELS}
    assert model_file(plain, fused, settings["auto"]) == plain  # no fused file yet
    with pytest.raises(ValueError, match="no fused export"):
        model_file(plain, fused, settings["fused"])
    fused.touch()
    assert model_file(plain, fused, settings["auto"]) == fused
    assert model_file(plain, fused, settings["fused"]) == fused
    assert model_file(plain, fused, settings["plain"]) == plain
    reference = MDSettings(kernels="auto", platform="Reference")  # not the CPU platform
    assert model_file(plain, fused, reference) == plain
    with pytest.raises(ValueError, match="CPU platform only"):
        model_file(plain, fused, MDSettings(kernels="fused", platform="Reference"))
    native = tmp_path / "classical.xml"
    assert model_file(native, None, settings["fused"]) == native
    with pytest.raises(ValueError, match=r"simulate\.kernels .fast. is unknown"):
        MDSettings(kernels="fast")


def test_without_a_compiler_exports_fall_back_to_plain_torchscript(tmp_path):
    """No C++ compiler (CXX=false): a warning says why, and the plain export still comes."""
    script = (
        "import warnings, torch\n"
        "from cgkd import ops\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(ops.available())\n"
        "print(any('could not be built' in str(w.message) for w in caught))\n"
    )
    env = {**os.environ, "CXX": "false", "CGKD_OPS_DIR": str(tmp_path / "ops")}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"]
