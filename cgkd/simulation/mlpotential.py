"""cgkd models for openmm-ml: ``MLPotential('cgkd', modelFile=...)``.

cgkd registers :class:`CGKDPotentialImplFactory` as the ``openmmml.potentials`` entry point
``cgkd``, so an OpenMM script loads an exported model the way it loads any ML potential::

    from openmmml import MLPotential
    system = MLPotential("cgkd", modelFile="student.ts").createSystem(topology, masses=18.015)

``modelFile`` is a TorchScript file that cgkd exported (``<name>.ts``; its fused flavour
``<name>_fused.ts`` is picked by ``kernels``, see :class:`CGKDPotentialImpl`) or a classical
model's native OpenMM System (``classical.xml``). openmm-ml imports this module when it is
imported itself, after openmm: so nothing heavy is imported here, and torch and cgkd's
OpenMM side are imported when a System is built.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

#: Which export of a model runs (as ``simulate.kernels``).
KERNELS = ("auto", "fused", "plain")


class CGKDPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`CGKDPotentialImpl` for ``MLPotential('cgkd', modelFile=...)``."""

    def createImpl(  # noqa: N802 (openmm-ml's name)
        self, name: str, modelFile: str | Path, kernels: str = "auto"
    ) -> CGKDPotentialImpl:
        return CGKDPotentialImpl(Path(modelFile), kernels)


class CGKDPotentialImpl(MLPotentialImpl):
    """An exported cgkd model as the forces of an OpenMM System (nm, kJ/mol, periodic box).

    Args:
        model_file: the plain TorchScript export (``<name>.ts``), a fused one
            (``<name>_fused.ts``, run as it is) or a classical model's System (``.xml``).
        kernels: for a plain export, ``auto`` runs its fused flavour (the compiled CPU
            kernels of :mod:`cgkd.ops`) where it has one and OpenMM has no CUDA platform,
            ``fused`` requires it, ``plain`` runs the plain TorchScript.
    """

    def __init__(self, model_file: Path, kernels: str = "auto"):
        if kernels not in KERNELS:
            raise ValueError(f"kernels='{kernels}' is unknown; use one of {KERNELS}")
        if not model_file.is_file():
            raise FileNotFoundError(f"cgkd model file {model_file} does not exist")
        self.model_file = model_file
        self.kernels = kernels

    def addForces(  # noqa: N802 (openmm-ml's name)
        self,
        topology: app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,
        masses: float | Sequence[float] | None = None,
        **args,
    ) -> None:
        """Add the model's forces to ``system`` in ``forceGroup``; ``createSystem`` calls this.

        The model acts on all of the topology's particles, which must be as many as its beads,
        in a periodic box. ``masses`` (amu, one value or one per particle) replaces the
        particles' masses; without it, a classical model's System gives its masses, and
        otherwise every particle must have one from its element (cgkd's bead PDB files have
        none: pass ``masses``).
        """
        if args:
            raise TypeError(f"unknown createSystem arguments for a cgkd model: {sorted(args)}")
        n_particles = system.getNumParticles()
        if atoms is not None and list(atoms) != list(range(n_particles)):
            raise ValueError(
                "a cgkd model acts on all the particles of a CG system; atoms subsets "
                "(createMixedSystem) are not supported"
            )
        if topology.getPeriodicBoxVectors() is None:
            raise ValueError("cgkd models are periodic; give the topology a periodic box")
        if self.model_file.suffix == ".xml":
            forces, model_masses = self._native_forces(n_particles)
        else:
            forces, model_masses = [self._torch_force(n_particles)], None
        for force in forces:
            force.setForceGroup(forceGroup)
            system.addForce(force)
        _set_masses(system, masses if masses is not None else model_masses)

    def _torch_force(self, n_particles: int) -> openmm.Force:
        """The TorchForce of the export that ``kernels`` picks, checked against the system."""
        from cgkd.simulation.engine import select_platform
        from cgkd.simulation.export import fused_path, is_fused, read_export_metadata
        from cgkd.simulation.system import torch_force

        path = self.model_file
        _check_count(path, read_export_metadata(path)["n_beads"], n_particles)
        fused = fused_path(path)
        if is_fused(path):
            if self.kernels == "plain":
                raise ValueError(f"{path} is a fused export; give its plain file for 'plain'")
        elif self.kernels == "fused" or (
            self.kernels == "auto"
            and fused.is_file()
            and select_platform("auto")[0].getName() == "CPU"
        ):
            if not fused.is_file():
                raise ValueError(
                    f"{path} has no fused export {fused.name} (the kernels did not build, or a "
                    "network has more than one interaction block); use kernels='auto' or 'plain'"
                )
            path = fused
        return torch_force(path)

    def _native_forces(self, n_particles: int) -> tuple[list[openmm.Force], list[float]]:
        """The forces and particle masses (amu) of a classical model's System, checked."""
        native = openmm.XmlSerializer.deserialize(self.model_file.read_text())
        _check_count(self.model_file, native.getNumParticles(), n_particles)
        forces = [copy.deepcopy(force) for force in native.getForces()]
        masses = [
            native.getParticleMass(i).value_in_unit(openmm.unit.amu) for i in range(n_particles)
        ]
        return forces, masses


def _check_count(path: Path, n_beads: int, n_particles: int) -> None:
    """Raise if a model of ``n_beads`` beads is given a system of ``n_particles``."""
    if n_beads != n_particles:
        raise ValueError(
            f"{path} is a model of {n_beads} beads, but the topology has {n_particles} "
            "particles; use the topology of the system the model was exported for"
        )


def _set_masses(system: openmm.System, masses: float | Sequence[float] | None) -> None:
    """Give the particles ``masses`` (amu, one value or one per particle); with None, check
    that every particle has a mass."""
    n_particles = system.getNumParticles()
    if masses is None:
        massless = sum(
            system.getParticleMass(i).value_in_unit(openmm.unit.amu) == 0
            for i in range(n_particles)
        )
        if massless:
            raise ValueError(
                f"{massless} of the {n_particles} particles have no mass (no element in the "
                "topology, as in cgkd's bead PDB files); pass masses= (amu) to createSystem"
            )
        return
    values = [float(masses)] * n_particles if np.ndim(masses) == 0 else list(masses)
    if len(values) != n_particles:
        raise ValueError(f"masses has {len(values)} values for {n_particles} particles")
    for index, mass in enumerate(values):
        system.setParticleMass(index, float(mass))
