"""All-atom reline, the deep eutectic solvent choline chloride : urea = 1 : 2, with CHARMM36.

The box is packed with packmol under periodic boundary conditions (no two atoms of different
molecules closer than ``packing_tolerance`` across the faces either) at ``packing_density``;
the NPT phase of the protocol then finds the force field's density. Molecules come from the
templates in ``templates/`` (CHARMM atom names, minimised in vacuum with CHARMM36) and are
ordered as packmol writes them: all cholines (``CHOL``), all chlorides (``CLA``), all ureas
(``UREA``), one chain each. Electrostatics use PME; Lennard-Jones interactions are switched off
between ``switch_distance`` and ``nonbonded_cutoff`` (OpenMM switches the potential, where
CHARMM itself switches the force), with no long-range correction, as charmm36.xml specifies.
They are computed by the NonbondedForce rather than charmm36.xml's tabulated
CustomNonbondedForce: the same energy (reline has no NBFIX pairs), several times faster.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import packmol
from openmm import app, unit
from packmol.cli import get_binary_path

from cgkd.systems.base import AASpec, BuiltSystem
from cgkd.units import ANGSTROM_PER_NM, AVOGADRO, NM3_PER_CM3

#: Force-field files (OpenMM's bundled CHARMM36; chloride ``CLA`` is in the water file).
FORCE_FIELD_FILES: tuple[str, ...] = ("charmm36.xml", "charmm36/water.xml")

#: Molecule templates: ``choline.pdb`` and ``urea.pdb`` (Å, CHARMM names, CONECT bonds).
TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Densest box the NPT phase is expected to reach, g/cm^3 (CHARMM36 gives about 1.20 at 328 K),
#: for the check that the box stays larger than twice the cutoff.
_DENSEST_EXPECTED = 1.25


@dataclass(frozen=True, eq=False)
class _Molecule:
    """One molecule type: residue name, atom names and elements, bonds, positions [n, 3] (nm)."""

    residue: str
    names: tuple[str, ...]
    elements: tuple[app.Element, ...]
    bonds: tuple[tuple[int, int], ...]
    positions: np.ndarray

    @property
    def mass(self) -> float:
        """Molar mass, g/mol."""
        return sum(element.mass.value_in_unit(unit.dalton) for element in self.elements)


@dataclass
class RelineSpec(AASpec):
    """Reline box and protocol. Units: nm, g/cm^3, K, ps (see :class:`AASpec` for the rest).

    The box holds ``n_choline_chloride`` choline cations and chloride anions and
    ``urea_per_choline`` times as many ureas, packed at ``packing_density`` with no atoms of
    different molecules closer than ``packing_tolerance``; ``seed`` also seeds packmol. The
    box edge at the densest expected density (1.25 g/cm^3) must exceed twice
    ``nonbonded_cutoff``.
    """

    n_choline_chloride: int = 100
    urea_per_choline: int = 2
    packing_density: float = 1.15
    packing_tolerance: float = 0.2
    nonbonded_cutoff: float = 1.2
    switch_distance: float = 1.0
    temperature: float = 328.0
    npt_equilibration: float = 100.0
    production: float = 100.0
    save_interval: int = 250

    def __post_init__(self) -> None:
        super().__post_init__()
        positive = {
            "n_choline_chloride": self.n_choline_chloride,
            "urea_per_choline": self.urea_per_choline,
            "packing_density": self.packing_density,
            "packing_tolerance": self.packing_tolerance,
            "nonbonded_cutoff": self.nonbonded_cutoff,
            "switch_distance": self.switch_distance,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"RelineSpec.{name} must be positive, got {value}")
        if self.switch_distance >= self.nonbonded_cutoff:
            raise ValueError(
                f"RelineSpec.switch_distance={self.switch_distance} nm must be below "
                f"nonbonded_cutoff={self.nonbonded_cutoff} nm; lower it"
            )
        if self.seed < 0:
            raise ValueError(
                f"RelineSpec.seed must be >= 0 (packmol takes a negative seed as random), "
                f"got {self.seed}"
            )
        # NPT compresses the box (to about 1.20 g/cm^3 at 328 K): check the densest box expected.
        density = max(self.packing_density, _DENSEST_EXPECTED)
        edge = self.box_edge * (self.packing_density / density) ** (1.0 / 3.0)
        if self.nonbonded_cutoff >= edge / 2:
            unit_volume = edge**3 / self.n_choline_chloride
            needed = int((2 * self.nonbonded_cutoff) ** 3 / unit_volume) + 1
            raise ValueError(
                f"reline box edge {edge:.3f} nm ({self.n_choline_chloride} ChCl + {self.n_urea} "
                f"urea at {density} g/cm^3) must exceed twice nonbonded_cutoff="
                f"{self.nonbonded_cutoff} nm; use n_choline_chloride >= {needed} "
                "or a smaller cutoff"
            )

    @property
    def n_urea(self) -> int:
        """Number of urea molecules."""
        return self.urea_per_choline * self.n_choline_chloride

    @property
    def counts(self) -> tuple[int, int, int]:
        """Numbers of choline, chloride and urea molecules, in box order."""
        return self.n_choline_chloride, self.n_choline_chloride, self.n_urea

    @property
    def box_edge(self) -> float:
        """Edge of the packed cubic box, nm: the total mass at ``packing_density``."""
        grams_per_mol = sum(n * m.mass for n, m in zip(self.counts, _molecules(), strict=True))
        volume = grams_per_mol / AVOGADRO / self.packing_density * NM3_PER_CM3
        return volume ** (1.0 / 3.0)

    def build(self) -> BuiltSystem:
        """Pack the box with packmol and parametrise it with CHARMM36 (PME, H-bond constraints)."""
        molecules = _molecules()
        edge = self.box_edge
        positions = _pack(molecules, self.counts, edge, self.packing_tolerance, self.seed)
        topology = app.Topology()
        for molecule, count in zip(molecules, self.counts, strict=True):
            chain = topology.addChain()
            for _ in range(count):
                residue = topology.addResidue(molecule.residue, chain)
                atoms = [
                    topology.addAtom(name, element, residue)
                    for name, element in zip(molecule.names, molecule.elements, strict=True)
                ]
                for i, j in molecule.bonds:
                    topology.addBond(atoms[i], atoms[j])
        topology.setPeriodicBoxVectors(np.eye(3) * edge * unit.nanometer)
        if len(positions) != topology.getNumAtoms():
            raise RuntimeError(
                f"packmol wrote {len(positions)} atoms for a topology of {topology.getNumAtoms()}"
            )

        system = app.ForceField(*FORCE_FIELD_FILES).createSystem(
            topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=self.nonbonded_cutoff * unit.nanometer,
            switchDistance=self.switch_distance * unit.nanometer,
            constraints=app.HBonds,
            rigidWater=True,
        )
        _lennard_jones_into_nonbonded(system)
        charge = _net_charge(system)
        if abs(charge) > 1e-6:
            raise RuntimeError(f"reline system has net charge {charge:.6f} e; check {TEMPLATES}")
        facts = {
            "force_field": list(FORCE_FIELD_FILES),
            "composition": dict(zip(("CHOL", "CLA", "UREA"), self.counts, strict=True)),
            "n_atoms": system.getNumParticles(),
            "box_edge_nm": edge,
            "packing_density_g_cm3": self.packing_density,
            "packing_tolerance_nm": self.packing_tolerance,
            "packmol_version": packmol.__version__,
        }
        return BuiltSystem(topology=topology, positions=positions, system=system, facts=facts)


@functools.cache
def _molecules() -> tuple[_Molecule, _Molecule, _Molecule]:
    """Choline, chloride and urea: the first and last from their template PDB files."""
    chloride = _Molecule("CLA", ("CLA",), (app.element.chlorine,), (), np.zeros((1, 3)))
    return _template("choline.pdb"), chloride, _template("urea.pdb")


def _template(filename: str) -> _Molecule:
    """The one-residue molecule of ``TEMPLATES / filename`` (bonds from its CONECT records)."""
    pdb = app.PDBFile(str(TEMPLATES / filename))
    (residue,) = pdb.topology.residues()
    return _Molecule(
        residue=residue.name,
        names=tuple(atom.name for atom in residue.atoms()),
        elements=tuple(atom.element for atom in residue.atoms()),
        bonds=tuple((bond.atom1.index, bond.atom2.index) for bond in residue.bonds()),
        positions=pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
    )


def _pack(
    molecules: tuple[_Molecule, ...],
    counts: tuple[int, ...],
    edge: float,
    tolerance: float,
    seed: int,
) -> np.ndarray:
    """Positions [N, 3] (nm) of ``counts`` copies of ``molecules`` packed by packmol, in order."""
    angstrom = edge * ANGSTROM_PER_NM
    lines = [
        f"tolerance {tolerance * ANGSTROM_PER_NM}",
        f"seed {seed}",
        "filetype xyz",
        "output packed.xyz",
        f"pbc 0. 0. 0. {angstrom} {angstrom} {angstrom}",
    ]
    with tempfile.TemporaryDirectory(prefix="cgkd-packmol-") as tmp:
        directory = Path(tmp)
        for molecule, count in zip(molecules, counts, strict=True):
            xyz = [
                f"{element.symbol} {x:.6f} {y:.6f} {z:.6f}"
                for element, (x, y, z) in zip(
                    molecule.elements, molecule.positions * ANGSTROM_PER_NM, strict=True
                )
            ]
            filename = f"{molecule.residue}.xyz"
            (directory / filename).write_text(f"{len(xyz)}\n{molecule.residue}\n" + "\n".join(xyz))
            lines += [f"structure {filename}", f"  number {count}", "end structure"]
        (directory / "pack.inp").write_text("\n".join(lines) + "\n")
        with open(directory / "pack.inp") as stdin:  # packmol rewinds its input: no pipe
            result = subprocess.run(
                [str(get_binary_path())],
                stdin=stdin,
                cwd=directory,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"packmol failed (exit code {result.returncode}): "
                f"{_packmol_reason(result.stdout + result.stderr)}"
            )
        return np.loadtxt(directory / "packed.xyz", skiprows=2, usecols=(1, 2, 3)) / ANGSTROM_PER_NM


def _packmol_reason(output: str) -> str:
    """The first line of packmol's output that says why it failed (else its last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reasons = [line for line in lines if "ERROR" in line.upper() or "WITHOUT PERFECT" in line]
    if reasons:
        return reasons[0]
    return lines[-1] if lines else "no output"


def _net_charge(system: openmm.System) -> float:
    """Sum of the NonbondedForce charges of ``system``, e."""
    (force,) = (f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return sum(
        force.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
        for i in range(force.getNumParticles())
    )


def _lennard_jones_into_nonbonded(system: openmm.System) -> None:
    """Move the Lennard-Jones table of charmm36.xml into the NonbondedForce, in place.

    OpenMM builds CHARMM36 Lennard-Jones as a tabulated CustomNonbondedForce (for NBFIX pairs).
    No NBFIX pair involves reline's atom types, so the table is Lorentz-Berthelot and per-atom
    sigma and epsilon in the NonbondedForce, which excludes the same 1-2, 1-3 and 1-4 pairs,
    give the same energy several times faster on the CPU platform.
    """
    forces = system.getForces()
    (index,) = (i for i, f in enumerate(forces) if isinstance(f, openmm.CustomNonbondedForce))
    (nonbonded,) = (f for f in forces if isinstance(f, openmm.NonbondedForce))
    custom = forces[index]
    tables = {}
    for k in range(custom.getNumTabulatedFunctions()):
        n, _, values = custom.getTabulatedFunction(k).getFunctionParameters()
        tables[custom.getTabulatedFunctionName(k)] = np.reshape(values, (n, n))
    a, b = np.diag(tables["acoef"]), np.diag(tables["bcoef"])
    sigma, epsilon = (a / b) ** (1.0 / 6.0), b**2 / (4.0 * a)
    mixed_sigma6 = ((sigma[:, None] + sigma[None]) / 2) ** 6
    mixed_epsilon4 = 4.0 * np.sqrt(epsilon[:, None] * epsilon[None])
    if not (
        np.allclose(tables["acoef"], mixed_epsilon4 * mixed_sigma6**2, rtol=1e-9, atol=0.0)
        and np.allclose(tables["bcoef"], mixed_epsilon4 * mixed_sigma6, rtol=1e-9, atol=0.0)
    ):
        raise RuntimeError("charmm36.xml has NBFIX pairs among reline's atom types; keep its table")
    for i in range(system.getNumParticles()):
        charge = nonbonded.getParticleParameters(i)[0]
        kind = int(custom.getParticleParameters(i)[0])
        nonbonded.setParticleParameters(i, charge, sigma[kind], epsilon[kind])
    nonbonded.setUseDispersionCorrection(custom.getUseLongRangeCorrection())
    system.removeForce(index)
