"""What the atoms of an imported trajectory are: their masses (the topology's, guessed or
set), which are virtual sites, and the temperature their velocities give.

Masses (amu) are the topology's; a topology without masses (GRO, PDB) gets MDAnalysis's
guesses from elements, types or atom names (a name it cannot place read as an element
symbol), and ``masses`` (atom name or type -> amu) sets or corrects them. A virtual site (the
M site of 4-site water, a lone pair) is an atom that is massless in the topology, or whose
mass is only guessed, and whose force is zero in every sampled frame (GROMACS writes them
so): it gets mass 0, whatever a guess from its name says, so that mapping leaves it out.
Real atoms whose mass nobody knows keep 0 and are refused when mapped into a bead.

The temperature of the data (K) is what the caller states or, where every sampled frame has
velocities, their kinetic temperature: sum m v^2 / (k_B n_dof) with n_dof = 3 (atoms with
mass) - constraints (pairs at constant distance, virtual sites aside) - 3 (the centre of mass).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from MDAnalysis.exceptions import NoDataError
from MDAnalysis.guesser.tables import masses as _element_masses

from cgkd.io.checks import TrajectoryError
from cgkd.mapping.constraints import detect_constraints
from cgkd.mapping.molecules import molecule_labels
from cgkd.units import KB_KJ_PER_MOL_K

if TYPE_CHECKING:
    from cgkd.io.reader import OpenTrajectory
    from cgkd.io.trajectory import FrameSample

#: Frames spread over the selection that virtual sites, constraints and the kinetic
#: temperature are judged from.
SAMPLE_FRAMES = 20


@dataclass(frozen=True)
class AtomMasses:
    """Atom masses and their origin.

    Attributes:
        values: ``[N]`` amu; 0 for virtual sites and for atoms whose mass nobody knows.
        source: ``"topology"`` (the file's masses) or ``"guessed"`` (MDAnalysis's guesses).
        virtual_sites: indices of the virtual sites.
        set: the ``masses`` entries applied (atom name or type -> amu).
        unknown: names of real atoms left at 0 amu.
    """

    values: np.ndarray
    source: str
    virtual_sites: np.ndarray
    set: dict[str, float]
    unknown: list[str]

    def record(self) -> dict[str, Any]:
        """What an imported file records about its masses."""
        return {
            "source": self.source,
            "set": self.set,
            "virtual_sites": len(self.virtual_sites),
            "unknown": self.unknown,
        }


def atom_masses(
    trajectory: OpenTrajectory, sample: FrameSample, masses: Mapping[str, float] | None = None
) -> AtomMasses:
    """The atoms' masses (amu): the topology's, else MDAnalysis's guesses; ``masses`` (atom
    name or type -> amu) replace them. Atoms massless in the topology (or with guessed masses)
    and force-free in every ``sample`` frame are virtual sites, of mass 0, unless ``masses``
    names them."""
    universe = trajectory.universe
    atoms = universe.atoms
    top = universe.filename
    try:
        given, source = np.asarray(atoms.masses, dtype=np.float64), "topology"
    except NoDataError:
        with warnings.catch_warnings():
            # MDAnalysis warns about names it cannot guess; mapping refuses such atoms itself.
            warnings.simplefilter("ignore")
            universe.guess_TopologyAttrs(to_guess=["masses"])
        given, source = _names_as_elements(atoms.names.astype(str), atoms.masses), "guessed"
    known = np.isfinite(given) & (given > 0)
    values = np.where(known, given, 0.0)
    names = atoms.names.astype(str)
    try:
        types = atoms.types.astype(str)
    except NoDataError:
        types = names
    named = np.zeros(len(names), dtype=bool)
    applied = {}
    for key, mass in (masses or {}).items():
        if not (isinstance(mass, int | float) and np.isfinite(mass) and mass > 0):
            raise TrajectoryError(f"input.masses.{key}={mass!r} is not a mass; give amu > 0")
        hit = (names == str(key)) | (types == str(key))
        if not hit.any():
            raise TrajectoryError(
                f"input.masses names {key!r}, which is no atom name or type of topology {top}; "
                f"its atom names include {', '.join(sorted(set(names))[:12])}"
            )
        values[hit] = mass
        named |= hit
        applied[str(key)] = float(mass)
    massless = ~known if source == "topology" else np.ones(len(names), dtype=bool)
    force_free = ~np.any(sample.forces != 0, axis=(0, 2))
    virtual = np.flatnonzero(massless & force_free & ~named)
    values[virtual] = 0.0
    real = np.ones(len(names), dtype=bool)
    real[virtual] = False
    return AtomMasses(
        values=values,
        source=source,
        virtual_sites=virtual,
        set=applied,
        unknown=sorted(set(names[real & (values == 0)])),
    )


#: MDAnalysis's element masses (amu) by upper-case symbol.
ELEMENT_MASSES = {symbol.upper(): mass for symbol, mass in _element_masses.items()}


def _names_as_elements(names: np.ndarray, guessed: np.ndarray) -> np.ndarray:
    """Masses (amu) where MDAnalysis guessed none, from the atom name read as an element
    symbol (digits dropped): its guesser takes ``AR`` (argon) for an unknown element ``A``."""
    masses = np.asarray(guessed, dtype=np.float64).copy()
    for i in np.flatnonzero(~(masses > 0)):
        masses[i] = ELEMENT_MASSES.get(names[i].rstrip("0123456789").upper(), 0.0)
    return masses


def data_temperature(
    trajectory: OpenTrajectory, sample: FrameSample, masses: AtomMasses, stated: float | None
) -> tuple[float | None, str]:
    """The data's temperature (K) and where it came from: ``stated`` (``input.temperature``),
    else the kinetic temperature of the ``sample``'s velocities (``None`` without them).

    A stated temperature more than 10 % off the velocities' is warned about.
    """
    if stated is not None and not (np.isfinite(stated) and stated > 0):
        raise TrajectoryError(f"input.temperature={stated!r} is not a temperature; give K > 0")
    measured, how = None, "nowhere: the trajectory has no velocities"
    if sample.velocities is not None and masses.unknown and stated is not None:
        return float(stated), "input.temperature"  # the velocities cannot check it
    if sample.velocities is not None:
        constraints = detect_constraints(
            sample.positions,
            sample.boxes,
            molecule_labels(trajectory.universe),
            source=trajectory.path,
            exclude=masses.virtual_sites,
        )
        if masses.unknown:
            raise TrajectoryError(
                f"topology {trajectory.universe.filename} gives no mass for atoms "
                f"{', '.join(masses.unknown[:8])}, so the velocities give no temperature; set "
                f"input.masses='{{{masses.unknown[0]}: <amu>}}' (or input.temperature=<K>)"
            )
        n_atoms = int(np.count_nonzero(masses.values > 0))
        n_dof = 3 * n_atoms - len(constraints) - 3
        measured = kinetic_temperature(masses.values, sample.velocities, n_dof)
        how = (
            f"velocities of {len(sample.velocities)} frames (3 x {n_atoms} atoms - "
            f"{len(constraints)} constraints - 3 = {n_dof} degrees of freedom)"
        )
    if stated is None:
        return measured, how
    if measured is not None and abs(measured - stated) > 0.1 * stated:
        warnings.warn(
            f"input.temperature={stated:g} K, but the velocities of {trajectory.path} say "
            f"{measured:.1f} K; check which one is the data's",
            UserWarning,
            stacklevel=2,
        )
    return float(stated), "input.temperature"


def kinetic_temperature(masses: np.ndarray, velocities: np.ndarray, n_dof: int) -> float:
    """Mean kinetic temperature (K) of ``velocities`` [T, N, 3] (nm/ps) of atoms of ``masses``
    [N] (amu) with ``n_dof`` degrees of freedom: <sum m v^2> / (k_B n_dof)."""
    if n_dof <= 0:
        raise TrajectoryError(f"{n_dof} degrees of freedom: too few atoms for a temperature")
    twice_kinetic = np.einsum("i,tij,tij->t", masses, velocities, velocities)
    return float(twice_kinetic.mean() / (KB_KJ_PER_MOL_K * n_dof))


def check_virtual_sites(
    forces: np.ndarray, masses: AtomMasses, trajectory: OpenTrajectory, times: np.ndarray
) -> None:
    """Refuse a force on an atom taken for a virtual site (it would be lost in mapping)."""
    pushed = np.any(forces[:, masses.virtual_sites] != 0, axis=2)
    if pushed.any():
        frame, site = np.argwhere(pushed)[0]
        atom = trajectory.universe.atoms[masses.virtual_sites[site]]
        raise TrajectoryError(
            f"atom {atom.index} ({atom.name} of {atom.resname} {atom.resid}) of "
            f"{trajectory.path} was taken for a virtual site (no mass in the topology, no force "
            f"in {SAMPLE_FRAMES} frames spread over the selection) but has a force at "
            f"t={times[frame]:g} ps; give it its mass with input.masses='{{{atom.name}: amu}}'"
        )
