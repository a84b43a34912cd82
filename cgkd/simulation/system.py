"""The OpenMM side of CG MD: a System of beads with the exported model and its topology (the
engine that runs it is :mod:`cgkd.simulation.engine`).

Import this module (or torch) before anything imports openmm: OpenMM loads its plugins when
first imported, and the openmmtorch plugin needs the libraries torch loads.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

# isort: off
import torch  # before openmm: see the module docstring
import openmm
import openmm.app as app

# openmmtorch's SWIG module imports the deprecated simtk.openmm, which logs a warning that
# means nothing to our users; silence just that import.
logging.disable(logging.WARNING)
from openmmtorch import TorchForce  # noqa: E402

logging.disable(logging.NOTSET)
# isort: on

from cgkd import ops  # noqa: E402
from cgkd.simulation.export import is_fused  # noqa: E402


def build_system(model_path: str, masses: np.ndarray, box: np.ndarray) -> openmm.System:
    """An OpenMM System of beads (masses in amu) in the periodic ``box`` [3, 3] (nm, rows are
    box vectors) whose only force is the exported model as a TorchForce, or, for a ``.xml``
    model (a classical model's native System, :mod:`cgkd.simulation.native`), that System
    with these masses and box (see :func:`torch_force` for what it sets in this process).
    """
    if Path(model_path).suffix == ".xml":
        return _native_system(Path(model_path), masses, box)
    system = openmm.System()
    for mass in masses:
        system.addParticle(float(mass))
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box)])
    system.addForce(torch_force(model_path))
    return system


def _native_system(path: Path, masses: np.ndarray, box: np.ndarray) -> openmm.System:
    """The serialized System at ``path`` with ``masses`` (amu) and ``box`` (nm)."""
    system = openmm.XmlSerializer.deserialize(path.read_text())
    if system.getNumParticles() != len(masses):
        raise ValueError(
            f"{path} is a System of {system.getNumParticles()} particles, not the "
            f"{len(masses)} beads of this system; export the model for this system"
        )
    for index, mass in enumerate(masses):
        system.setParticleMass(index, float(mass))
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box)])
    return system


def torch_force(model_path: str | Path) -> TorchForce:
    """The TorchForce (periodic) of a model file: an exported cgkd model, whose metadata says
    whether it returns its forces (the fused flavour, whose kernels are loaded here first),
    or any TorchScript file with the openmmtorch contract.

    Readies this process first: loads the openmmtorch plugin again if OpenMM could not load
    it at import (openmm imported before torch), and switches TorchScript to the executor
    that optimises a model once, at its first call (the default re-optimises it after
    profiling calls, so the first calls round differently from later ones and a run
    restarted from a checkpoint would not repeat the original bit for bit; measured here, it
    is also about 15% faster for a 1000-bead student).
    """
    _load_torch_plugin()
    torch._C._jit_set_profiling_executor(False)
    outputs_forces = is_fused(Path(model_path))
    if outputs_forces:
        ops.library_path()
    force = TorchForce(str(model_path))
    force.setUsesPeriodicBoundaryConditions(True)
    force.setOutputsForces(outputs_forces)
    return force


def openmm_seed(seed: int) -> int:
    """The OpenMM random seed for a cgkd ``seed``: OpenMM takes 0 to mean "pick one at random",
    so every seed is shifted by one and seed 0 is reproducible too."""
    if seed < 0:
        raise ValueError(f"seed {seed} is negative; use 0 or more")
    return seed + 1


def bead_topology(n_beads: int, box: np.ndarray, names: list[str] | None = None) -> app.Topology:
    """An OpenMM topology of ``n_beads`` one-bead residues named by bead type."""
    topology = app.Topology()
    chain = topology.addChain()
    for index in range(n_beads):
        name = names[index] if names else "CG"
        residue = topology.addResidue(name[:3].upper(), chain)
        topology.addAtom(name[:4].upper(), None, residue)
    topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in np.asarray(box)])
    return topology


@functools.cache
def _load_torch_plugin() -> None:
    """Load the openmmtorch plugins that OpenMM failed to load at import because torch's
    libraries were not loaded yet (openmm imported before torch, as ``import openmmml`` does);
    raise if the CPU one (TorchReference) still fails. Once per process."""
    for failure in openmm.Platform.getPluginLoadFailures():
        path = failure.removeprefix("Error loading library ").split(": ", 1)[0]
        if not Path(path).name.startswith("libOpenMMTorch"):
            continue
        try:
            openmm.Platform.loadPluginLibrary(path)
        except openmm.OpenMMException as error:
            if "TorchReference" in path:
                raise RuntimeError(
                    f"OpenMM could not load the openmmtorch plugin ({str(error).strip()}); "
                    "check that openmmtorch matches the installed torch"
                ) from None
