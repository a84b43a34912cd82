"""Teachers: whatever labels frames with forces and energies and can run MD to sample them.

Three kinds, one interface (:class:`Teacher`):

- :class:`EnsembleTeacher`: members trained by cgkd; labels carry the members' mean and
  spread of forces and their mean per-bead energies.
- :class:`TorchScriptTeacher`: any TorchScript file with the OpenMM-Torch contract
  ``forward(positions[N, 3], box[3, 3]) -> energy`` (nm, kJ/mol), e.g. a model trained
  elsewhere; forces are minus its gradient. A ``bead_energies`` method is used when present.
- :class:`OpenMMTeacher`: an OpenMM System of the same particles (all-atom, identity mapping),
  e.g. AMOEBA water: accurate and slow.

Labels of a teacher without per-bead energies split its total energy evenly over the beads
(``has_bead_energies`` is False); a single teacher's force spread is zero.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch

# isort: off
from cgkd.simulation.engine import create_simulation, make_integrator  # before openmm
import openmm
import openmm.unit as unit

# isort: on
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from cgkd.geometry import make_whole
from cgkd.mapping.molecules import reference_atoms
from cgkd.models.potential import CGPotential
from cgkd.simulation.export import is_fused
from cgkd.simulation.sampling import SampledFrames, SamplerSettings, sample_md
from cgkd.simulation.system import build_system
from cgkd.training.dataset import Targets
from cgkd.training.targets import label_frames


class Teacher(abc.ABC):
    """Labels frames and samples configurations by MD. Positions and boxes in nm, bead order
    of the CG dataset."""

    #: Whether labels hold the teacher's own per-bead energies.
    has_bead_energies: bool = False
    #: How many models' mean the labels are (their spread is zero for one).
    n_teachers: int = 1

    @abc.abstractmethod
    def label(self, positions: np.ndarray, boxes: np.ndarray, *, progress: bool = True) -> Targets:
        """Forces, force spread, per-bead and total energies of frames [T, N, 3] in boxes
        [T, 3, 3]."""

    @abc.abstractmethod
    def md_system(self, masses: np.ndarray, box: np.ndarray) -> openmm.System:
        """The OpenMM System that runs the teacher's MD (bead masses in amu, box [3, 3] nm)."""

    def to_particles(self, beads: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Bead positions [T, N, 3] as the positions of :meth:`md_system`'s particles."""
        return beads

    def to_beads(self, particles: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_particles`."""
        return particles

    def sample(
        self,
        positions: np.ndarray,
        boxes: np.ndarray,
        masses: np.ndarray,
        settings: SamplerSettings,
        *,
        seed: int = 0,
        progress: bool = True,
    ) -> SampledFrames:
        """Teacher MD (:func:`~cgkd.simulation.sampling.sample_md`) from the starting frames;
        the frames come back in bead order."""
        sampled = sample_md(
            self.md_system(masses, boxes[0]),
            self.to_particles(positions, boxes),
            boxes,
            settings,
            seed=seed,
            progress=progress,
        )
        sampled.positions = self.to_beads(sampled.positions)
        return sampled


class _TorchScriptMD(Teacher):
    """Sampling with an exported model file as an OpenMM TorchForce."""

    md_model: Path | None

    def md_system(self, masses: np.ndarray, box: np.ndarray) -> openmm.System:
        if self.md_model is None:
            raise ValueError(
                "teacher MD runs a single teacher or the whole ensemble; set loss.n_teachers "
                "to 1 or null"
            )
        return build_system(str(self.md_model), masses, box)


class EnsembleTeacher(_TorchScriptMD):
    """cgkd-trained members merged into one potential (``labeller``, which labels on
    ``device``); ``md_model`` is the exported file of the same members that runs the sampling
    MD (None: there is none)."""

    has_bead_energies = True

    def __init__(
        self,
        labeller: CGPotential,
        species: np.ndarray,
        md_model: Path | None,
        device: torch.device | str = "cpu",
    ):
        self.labeller, self.species, self.md_model = labeller, species, md_model
        self.n_teachers = len(labeller.networks)
        self.device = device

    def label(self, positions: np.ndarray, boxes: np.ndarray, *, progress: bool = True) -> Targets:
        return label_frames(
            self.labeller, positions, boxes, self.species, progress=progress, device=self.device
        )


class TorchScriptTeacher(_TorchScriptMD):
    """A TorchScript potential file with the OpenMM-Torch contract."""

    def __init__(self, path: Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"teacher.path={path} does not exist; give a TorchScript file whose "
                "forward(positions[N,3], box[3,3]) returns the energy (nm, kJ/mol)"
            )
        if is_fused(path):
            raise ValueError(
                f"teacher.path={path} is a fused export (it returns forces, not an energy); "
                f"give its plain export {path.with_name(path.name.replace('_fused', ''))}"
            )
        self.md_model = path
        self.module = torch.jit.load(str(path))
        self.has_bead_energies = hasattr(self.module, "bead_energies")

    def label(self, positions: np.ndarray, boxes: np.ndarray, *, progress: bool = True) -> Targets:
        forces, bead_energies, energies = [], [], []
        for x, box in tqdm(
            zip(positions, boxes, strict=True),
            total=len(positions),
            desc="labelling frames",
            disable=not progress,
            unit="frame",
        ):
            x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            box_t = torch.tensor(box, dtype=torch.float64)
            energy = self.module(x_t, box_t)
            (gradient,) = torch.autograd.grad(energy, x_t)
            forces.append(-gradient.numpy())
            energies.append(float(energy.detach()))
            if self.has_bead_energies:
                with torch.no_grad():
                    bead_energies.append(self.module.bead_energies(x_t.detach(), box_t).numpy())
        return _targets(np.stack(forces), np.asarray(energies), bead_energies or None)


class OpenMMTeacher(Teacher):
    """An OpenMM System whose particles are the beads (identity mapping), in the order
    ``atom_of_bead`` (bead b is particle ``atom_of_bead[b]``).

    OpenMM's bonded forces do not apply periodic images, so molecules must be whole: frames
    are made whole over ``bonds`` ([K, 2] bead pairs, the dataset's CG bonds) first.
    """

    def __init__(
        self,
        system: openmm.System,
        atom_of_bead: np.ndarray,
        *,
        bonds: np.ndarray | None = None,
        platform: str = "CPU",
        threads: int | None = None,
    ):
        n_particles = system.getNumParticles()
        self.atom_of_bead = np.asarray(atom_of_bead, dtype=int)
        if sorted(self.atom_of_bead.tolist()) != list(range(n_particles)):
            raise ValueError(
                f"the OpenMM teacher has {n_particles} particles but the CG dataset's beads are "
                f"not a one-to-one map of them ({len(self.atom_of_bead)} beads); use an "
                "identity mapping (one bead per atom, e.g. mapping=identity_water) and a System "
                "without virtual sites"
            )
        self.system = system
        self.platform, self.threads = platform, threads
        n_beads = len(self.atom_of_bead)
        pairs = np.zeros((0, 2), dtype=int) if bonds is None else np.asarray(bonds, dtype=int)
        graph = sparse.coo_matrix((np.ones(len(pairs)), pairs.T), shape=(n_beads, n_beads))
        self._anchor = reference_atoms(connected_components(graph, directed=False)[1])

    def to_particles(self, beads: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Bead positions [T, N, 3] as the System's particle positions, molecules whole."""
        atoms = np.empty_like(beads)
        atoms[:, self.atom_of_bead] = make_whole(beads, boxes, self._anchor)
        return atoms

    def label(self, positions: np.ndarray, boxes: np.ndarray, *, progress: bool = True) -> Targets:
        verlet = make_integrator("verlet", 0.001)
        simulation = create_simulation(
            self.system, verlet, platform=self.platform, threads=self.threads
        )
        context = simulation.context
        forces, energies = [], []
        for x, box in tqdm(
            zip(self.to_particles(positions, boxes), boxes, strict=True),
            total=len(positions),
            desc="labelling frames (OpenMM teacher)",
            disable=not progress,
            unit="frame",
        ):
            context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
            context.setPositions(x)
            state = context.getState(getForces=True, getEnergy=True)
            force = state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer
            )
            forces.append(np.asarray(force))
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        return _targets(self.to_beads(np.stack(forces)), np.asarray(energies), None)

    def md_system(self, masses: np.ndarray, box: np.ndarray) -> openmm.System:
        return self.system  # its own masses and box

    def to_beads(self, particles: np.ndarray) -> np.ndarray:
        return particles[:, self.atom_of_bead]


def _targets(
    forces: np.ndarray, energies: np.ndarray, bead_energies: list[np.ndarray] | None
) -> Targets:
    """Labels of one teacher: zero spread; without per-bead energies, E / N on every bead."""
    n_beads = forces.shape[1]
    if bead_energies is None:
        per_bead = np.repeat(energies[:, None] / n_beads, n_beads, axis=1)
    else:
        per_bead = np.stack(bead_energies).astype(np.float64)
    return Targets(
        forces=forces.astype(np.float64),
        force_std=np.zeros_like(forces, dtype=np.float64),
        bead_energies=per_bead,
        energies=energies.astype(np.float64),
    )
