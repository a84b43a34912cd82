"""All-atom reference water: a cubic box of rigid 3- or 4-site water, or of flexible,
polarizable AMOEBA water.

The box is built with ``Modeller.addSolvent`` (a pre-equilibrated TIP3P or TIP4P-Ew box
matching the model's site count; TIP3P for AMOEBA), rescaled (moving whole molecules) to the
target mass density, and simulated with PME electrostatics by
:func:`cgkd.systems.reference_md.generate`.

AMOEBA water (``amoeba2018``) has no constraints and carries induced dipoles, converged to
``AMOEBA_INDUCED_EPSILON`` (``mutual``), extrapolated (``extrapolated``) or taken from the
permanent multipoles' field alone (``direct``), as ``WaterBoxSpec.polarization`` says. Its
bonds vibrate: use a time step of about 0.5 fs.

4-site models (TIP4P-Ew, OPC) carry their negative charge on a massless virtual site M.
OpenMM distributes the force on M to O, H1 and H2 when it computes forces, so the forces of
the real atoms in ``State.getForces`` already include it (the entry it still reports for M
must not be added again); the saved data set keeps only the real atoms. The tests check this
against finite differences of the energy and against a vanishing net force.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import openmm
from openmm import app, unit

from cgkd.systems.base import AASpec, BuiltSystem
from cgkd.units import AVOGADRO, NM3_PER_CM3

#: Supported water models: force-field file and the Modeller box to start from.
WATER_MODELS: dict[str, tuple[str, str]] = {
    "tip3p": ("amber14/tip3p.xml", "tip3p"),
    "tip3pfb": ("amber14/tip3pfb.xml", "tip3p"),
    "spce": ("amber14/spce.xml", "spce"),
    "opc3": ("amber14/opc3.xml", "tip3p"),
    "tip4pew": ("amber14/tip4pew.xml", "tip4pew"),
    "opc": ("amber14/opc.xml", "tip4pew"),
    "amoeba2018": ("amoeba2018.xml", "tip3p"),
}

#: The flexible, polarizable models among ``WATER_MODELS``; the others are rigid.
AMOEBA_MODELS = ("amoeba2018",)

#: AMOEBA induced-dipole schemes (OpenMM's ``polarization`` argument of ``createSystem``).
POLARIZATIONS = ("mutual", "extrapolated", "direct")

#: Convergence target of mutual induced dipoles (RMS change between iterations, Debye).
AMOEBA_INDUCED_EPSILON = 1e-5


@dataclass
class WaterBoxSpec(AASpec):
    """A water box. Units: nm, g/cm^3 (protocol fields: see :class:`AASpec`).

    ``density`` is the mass density the initial box is scaled to; without an NPT phase
    (``npt_equilibration=0``, the default) the box then stays fixed. ``polarization`` (one of
    ``POLARIZATIONS``) applies to AMOEBA models only; AMOEBA's van der Waals cutoff is
    ``nonbonded_cutoff`` too.
    """

    n_molecules: int = 300
    water_model: str = "tip3p"
    nonbonded_cutoff: float = 0.9
    density: float = 0.997
    polarization: str = "mutual"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.water_model not in WATER_MODELS:
            raise ValueError(
                f"water_model {self.water_model!r} is unsupported; use one of {list(WATER_MODELS)}"
            )
        if self.polarization not in POLARIZATIONS:
            raise ValueError(
                f"WaterBoxSpec.polarization {self.polarization!r} is unknown; use one of "
                f"{list(POLARIZATIONS)}"
            )
        if self.polarization != "mutual" and self.water_model not in AMOEBA_MODELS:
            raise ValueError(
                f"WaterBoxSpec.polarization {self.polarization!r} only applies to AMOEBA water "
                f"{list(AMOEBA_MODELS)}; leave it at 'mutual' for {self.water_model}"
            )
        for name in ("n_molecules", "nonbonded_cutoff", "density"):
            if not getattr(self, name) > 0:
                raise ValueError(f"WaterBoxSpec.{name} must be positive, got {getattr(self, name)}")

    def build(self) -> BuiltSystem:
        """Box of ``n_molecules`` waters at ``density``, as a periodic PME system."""
        xml, box_model = WATER_MODELS[self.water_model]
        forcefield = app.ForceField(xml)
        modeller = app.Modeller(app.Topology(), [])
        modeller.addSolvent(forcefield, model=box_model, numAdded=self.n_molecules)
        topology = modeller.topology
        positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
        self._rescale_to_density(topology, positions)
        cutoff = self.nonbonded_cutoff * unit.nanometer
        facts: dict[str, Any] = {"force_field": [xml], "composition": {"HOH": self.n_molecules}}
        if self.water_model in AMOEBA_MODELS:
            options: dict[str, Any] = {
                "rigidWater": False,
                "vdwCutoff": cutoff,
                "polarization": self.polarization,
                "mutualInducedTargetEpsilon": AMOEBA_INDUCED_EPSILON,
            }
            facts["polarization"] = self.polarization
        else:
            options = {"rigidWater": True}
        system = forcefield.createSystem(
            topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff, constraints=None, **options
        )
        if self.water_model in AMOEBA_MODELS:
            _drop_empty_forces(system)
        return BuiltSystem(topology, positions, system, facts)

    def _rescale_to_density(self, topology: app.Topology, positions: np.ndarray) -> None:
        """Shift molecules in place so the cubic box has ``self.density``."""
        masses = np.array(
            [
                atom.element.mass.value_in_unit(unit.dalton) if atom.element else 0.0
                for atom in topology.atoms()
            ]
        )
        volume = masses.sum() / AVOGADRO / self.density * NM3_PER_CM3
        edge = volume ** (1.0 / 3.0)
        if self.nonbonded_cutoff >= edge / 2:
            needed = math.ceil((2 * self.nonbonded_cutoff) ** 3 / volume * self.n_molecules) + 1
            raise ValueError(
                f"water box edge {edge:.3f} nm ({self.n_molecules} molecules at {self.density} "
                f"g/cm^3) must exceed twice nonbonded_cutoff={self.nonbonded_cutoff} nm; use "
                f"n_molecules >= {needed} or a smaller cutoff"
            )
        old_edge = topology.getUnitCellDimensions().value_in_unit(unit.nanometer)[0]
        residue = np.array([atom.residue.index for atom in topology.atoms()])
        centres = np.zeros((topology.getNumResidues(), 3))
        np.add.at(centres, residue, positions * masses[:, None])
        centres /= np.bincount(residue, weights=masses)[:, None]
        positions += centres[residue] * (edge / old_edge - 1.0)
        topology.setPeriodicBoxVectors(np.eye(3) * edge * unit.nanometer)


def _drop_empty_forces(system: openmm.System) -> None:
    """Remove the AMOEBA bonded forces that have no terms in water (pi-torsions, out-of-plane
    bends, ...): compiling their expressions costs about 15 s per Context, for nothing."""
    counts = {
        openmm.CustomCompoundBondForce: "getNumBonds",
        openmm.PeriodicTorsionForce: "getNumTorsions",
        openmm.AmoebaTorsionTorsionForce: "getNumTorsionTorsions",
    }
    for index in reversed(range(system.getNumForces())):
        force = system.getForce(index)
        count = counts.get(type(force))
        if count is not None and getattr(force, count)() == 0:
            system.removeForce(index)
