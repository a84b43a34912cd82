"""Bead definitions from config, compiled to a sparse linear position map.

A mapping (``conf/mapping/*.yaml``) lists bead kinds. Each has an MDAnalysis selection, and
the selected atoms are split into one bead per residue, per fragment (bonded cluster), per
molecule (atoms linked by bonds or a shared residue) or per atom (the identity mapping of an
all-atom model, ``conf/mapping/identity_water.yaml``)::

    name: reline_multibead
    weights: mass            # bead position = centre of mass ("geometry": centre of geometry)
    force_map: basic         # basic | constraint_aware | optimal
    beads:
      - {name: CHH, select: "resname CHOL and not name C5 H51 H52 OH1 HO1", per: residue}
      - {name: CHT, select: "resname CHOL and name C5 H51 H52 OH1 HO1", per: residue}

A bead kind without a ``name`` is named after the residue names of its atoms (joined with
"-"), so ``{select: all, per: molecule}`` is one bead per molecule named by its residues.
:func:`compile_mapping` turns the definition and a topology into a :class:`CompiledMapping`:
the position map M (beads x atoms, rows summing to 1), bead species, masses and molecules.
Beads are ordered by their first atom, so a mapping with one bead per atom keeps the atoms'
order. Virtual sites (massless, force-free atoms such as the M site of 4-site water; see
:mod:`cgkd.mapping.constraints`) belong to no bead, whatever the selections say. Every other
atom of a bead needs a mass, and a bead lighter than :data:`MIN_BEAD_MASS` is refused: set
masses that the topology lacks with ``input.masses``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from MDAnalysis import Universe
from MDAnalysis.exceptions import NoDataError, SelectionError
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from cgkd.mapping.force_maps import FORCE_MAPS
from cgkd.mapping.molecules import atom_bonds, molecule_labels, reference_atoms

#: How the atoms of one bead kind are split into beads ("atom": each atom its own bead).
GROUPINGS = ("residue", "fragment", "molecule", "atom")

#: How atoms are weighted in a bead's position.
WEIGHTS = ("mass", "geometry")

#: Lightest bead accepted, amu (a hydrogen is 1.008): lighter means masses are missing.
MIN_BEAD_MASS = 0.5

#: What to do about atoms without a (plausible) mass.
_MASS_FIX = (
    "set masses by atom name or type with input.masses='{NAME: amu, ...}', or use a topology "
    "with masses"
)


class MappingError(ValueError):
    """A mapping definition does not fit the topology (or is malformed)."""


class UnmappedAtomsWarning(UserWarning):
    """Some atoms belong to no bead."""


class UnbondedBeadsWarning(UserWarning):
    """The beads of a molecule are not all joined by CG bonds."""


@dataclass(frozen=True)
class BeadKind:
    """One kind of bead: an MDAnalysis selection split ``per`` residue, fragment, molecule or
    atom (``per="atom"``: each selected atom is a bead of its own)."""

    select: str
    per: str = "residue"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.per not in GROUPINGS:
            raise MappingError(
                f"bead {self.name or self.select!r}: per={self.per!r} is unknown; "
                f"use one of {list(GROUPINGS)}"
            )


@dataclass(frozen=True)
class OptimalMapSettings:
    """The minimum-variance (``optimal``) force map's fit: on ``fit_frames`` frames spread
    evenly over the data, with the force second-moment matrix regularised by ``ridge``
    (relative)."""

    fit_frames: int = 100
    ridge: float = 1e-6


@dataclass(frozen=True)
class MappingSpec:
    """A whole mapping: bead kinds, position weights (``mass``: centre of mass, ``geometry``:
    centre of geometry), force map (``basic``, ``constraint_aware`` or ``optimal``), whether an
    atom may belong to several beads, and the optimal map's fit. The schema of the ``mapping``
    config section."""

    name: str
    beads: tuple[BeadKind, ...]
    weights: str = "mass"
    force_map: str = "basic"
    allow_overlap: bool = False
    optimal: OptimalMapSettings = field(default_factory=OptimalMapSettings)

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise MappingError(
                f"mapping {self.name!r}: weights={self.weights!r} is unknown; use one of "
                f"{list(WEIGHTS)}"
            )
        if self.force_map not in FORCE_MAPS:
            raise MappingError(
                f"mapping {self.name!r}: force_map={self.force_map!r} is unknown; use one of "
                f"{list(FORCE_MAPS)}"
            )
        if not self.beads:
            raise MappingError(f"mapping {self.name!r} defines no beads; add a beads: list")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MappingSpec:
        """From a ``conf/mapping`` section (plain dict)."""
        known = {"name", "beads", "weights", "force_map", "allow_overlap", "optimal"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise MappingError(
                f"mapping.{unknown[0]} is not a mapping setting; valid: {sorted(known)}"
            )
        beads = []
        for bead in config.get("beads") or []:
            if not isinstance(bead, dict) or "select" not in bead:
                raise MappingError(
                    f"mapping {config.get('name')!r}: bead {bead!r} needs a select: string"
                )
            beads.append(BeadKind(**bead))
        values = {k: v for k, v in config.items() if k != "beads"}
        optimal = OptimalMapSettings(**(config.get("optimal") or {}))
        return cls(**{**values, "beads": tuple(beads), "optimal": optimal})

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (what is recorded with a CG data set)."""
        return {
            "name": self.name,
            "beads": [
                {"select": b.select, "per": b.per, **({"name": b.name} if b.name else {})}
                for b in self.beads
            ],
            "weights": self.weights,
            "force_map": self.force_map,
            "allow_overlap": self.allow_overlap,
            "optimal": asdict(self.optimal),
        }

    def describe(self) -> str:
        """One line for logs: the name, each bead kind's selection and split, weights, force
        map (a mapping changed by overrides keeps its name, so the beads tell it apart)."""
        kinds = "; ".join(
            f"{kind.name or '(residue names)'} = {kind.select!r} per {kind.per}"
            for kind in self.beads
        )
        return f"{self.name} [{kinds}] ({self.weights} weights, {self.force_map} force map)"

    @property
    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the definition, to tell mappings apart."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class CompiledMapping:
    """A mapping applied to one topology.

    Attributes:
        position_map: ``[B, N]`` CSR matrix; bead position = row . atom positions (rows sum to 1).
        types: ``[B]`` species index of each bead, into ``type_names``.
        type_names: bead species names, sorted.
        masses: ``[B]`` bead masses, amu (an atom shared by k beads gives each 1/k of its mass).
        molecules: ``[N]`` molecule label of each atom (molecules are made whole before mapping).
        unmapped: indices of atoms in no bead, virtual sites aside.
        virtual_sites: indices of the virtual sites (massless, force-free; in no bead).
        bonds: ``[K, 2]`` bead pairs (i < j) joined by a covalent bond of their atoms, or
            sharing an atom: the CG bonds that bonded priors act on.
    """

    position_map: sparse.csr_matrix
    types: np.ndarray
    type_names: list[str]
    masses: np.ndarray
    molecules: np.ndarray
    unmapped: np.ndarray
    virtual_sites: np.ndarray
    bonds: np.ndarray

    @property
    def n_beads(self) -> int:
        """Number of beads."""
        return self.position_map.shape[0]

    @functools.cached_property
    def reference_atoms(self) -> np.ndarray:
        """``[N]`` first atom of each atom's molecule: the anchor for making molecules whole."""
        return reference_atoms(self.molecules)

    def summary(self) -> str:
        """Beads per species, atoms per bead, unmapped atoms: a few lines for people."""
        sizes = np.diff(self.position_map.indptr)
        lines = [f"{self.n_beads} beads of {len(self.type_names)} species"]
        for index, name in enumerate(self.type_names):
            mine = self.types == index
            atoms = Counter(sizes[mine].tolist())
            per_bead = ", ".join(f"{n} atoms x {count}" for n, count in sorted(atoms.items()))
            lines.append(
                f"  {name:<10} {int(mine.sum()):>6} beads, {per_bead}; "
                f"mass {self.masses[mine].mean():.3f} amu"
            )
        lines.append(f"  CG bonds: {len(self.bonds)}")
        lines.append(f"  unmapped atoms: {len(self.unmapped)}")
        lines.append(
            f"  virtual sites (massless, force-free; in no bead): {len(self.virtual_sites)}"
        )
        return "\n".join(lines)


def _grouping(universe: Universe, kind: BeadKind, groupings: dict[str, np.ndarray]) -> np.ndarray:
    """Per-atom labels that split a bead kind's atoms into beads."""
    if kind.per != "fragment":
        return groupings[kind.per]
    try:
        return universe.atoms.fragindices
    except NoDataError:
        raise MappingError(
            f"bead {kind.name or kind.select!r}: per=fragment needs bonds in the topology; "
            "use per: residue or molecule"
        ) from None


def compile_mapping(
    spec: MappingSpec,
    universe: Universe,
    masses: np.ndarray,
    virtual_sites: np.ndarray | None = None,
) -> CompiledMapping:
    """The position map, species and masses of ``spec`` on ``universe`` (atom ``masses``, amu).

    Atoms in ``virtual_sites`` (indices) belong to no bead; every other atom of a bead must
    have a positive mass, and every bead at least :data:`MIN_BEAD_MASS`.
    """
    n_atoms = universe.atoms.n_atoms
    if len(masses) != n_atoms:
        raise MappingError(
            f"topology has {n_atoms} atoms but the data have {len(masses)}; map data with "
            "the topology they were made with"
        )
    virtual = np.zeros(n_atoms, dtype=bool)
    if virtual_sites is not None:
        virtual[virtual_sites] = True
    molecules = molecule_labels(universe)
    groupings = {
        "residue": universe.atoms.resindices,
        "molecule": molecules,
        "atom": np.arange(n_atoms),
    }
    rows: list[np.ndarray] = []
    names: list[str] = []
    resnames = universe.atoms.resnames
    for kind in spec.beads:
        try:
            selected = universe.select_atoms(kind.select).indices
        except (SelectionError, ValueError) as err:
            raise MappingError(
                f"mapping {spec.name!r}: bad selection {kind.select!r}: {err}"
            ) from None
        if len(selected) == 0:
            raise MappingError(
                f"mapping {spec.name!r}: selection {kind.select!r} matches no atoms; check the "
                "residue and atom names in the topology"
            )
        selected = selected[~virtual[selected]]
        if len(selected) == 0:
            raise MappingError(
                f"mapping {spec.name!r}: selection {kind.select!r} matches only virtual sites "
                "(massless, force-free atoms), which belong to no bead; select real atoms"
            )
        labels = _grouping(universe, kind, groupings)[selected]
        for label in np.unique(labels):
            atoms = selected[labels == label]
            rows.append(atoms)
            names.append(kind.name or "-".join(dict.fromkeys(resnames[atoms].tolist())))
    counts = np.bincount(np.concatenate(rows), minlength=n_atoms)
    if not spec.allow_overlap and np.any(counts > 1):
        atom = int(np.flatnonzero(counts > 1)[0])
        raise MappingError(
            f"mapping {spec.name!r}: atom {atom} ({_atom_words(universe, atom)}) is in "
            f"{counts[atom]} beads; fix the selections or set allow_overlap: true"
        )
    unmapped = np.flatnonzero((counts == 0) & ~virtual)
    if len(unmapped):
        warnings.warn(
            f"mapping {spec.name!r} leaves {len(unmapped)} of {n_atoms} atoms unmapped",
            UnmappedAtomsWarning,
            stacklevel=2,
        )
    order = np.argsort([atoms.min() for atoms in rows], kind="stable")
    rows = [rows[i] for i in order]
    names = [names[i] for i in order]
    _check_atom_masses(spec.name, universe, masses, rows, names)
    share = 1.0 / np.maximum(counts, 1)
    data, bead_masses = [], np.empty(len(rows))
    for b, atoms in enumerate(rows):
        weights = masses[atoms] if spec.weights == "mass" else np.ones(len(atoms))
        data.append(weights / weights.sum())
        bead_masses[b] = float((masses[atoms] * share[atoms]).sum())
        if not bead_masses[b] >= MIN_BEAD_MASS:
            raise MappingError(
                f"mapping {spec.name!r}: bead {names[b]!r} (atoms "
                f"{', '.join(universe.atoms[atoms[:5]].names)}) weighs {bead_masses[b]:.3g} amu, "
                f"less than {MIN_BEAD_MASS} amu; {_MASS_FIX}"
            )
    indptr = np.r_[0, np.cumsum([len(atoms) for atoms in rows])]
    position_map = sparse.csr_matrix(
        (np.concatenate(data), np.concatenate(rows), indptr), shape=(len(rows), n_atoms)
    )
    position_map.sort_indices()
    type_names = sorted(set(names))
    bonds = bead_bonds(position_map, atom_bonds(universe))
    _warn_unbonded_molecules(spec.name, bonds, molecules[[atoms.min() for atoms in rows]])
    return CompiledMapping(
        position_map=position_map,
        types=np.searchsorted(type_names, names),
        type_names=type_names,
        masses=bead_masses,
        molecules=molecules,
        unmapped=unmapped,
        virtual_sites=np.flatnonzero(virtual),
        bonds=bonds,
    )


def _atom_words(universe: Universe, index: int) -> str:
    """'NAME of RESNAME RESID': an atom as people find it in the topology."""
    atom = universe.atoms[index]
    return f"{atom.name} of {atom.resname} {atom.resid}"


def _check_atom_masses(
    name: str, universe: Universe, masses: np.ndarray, rows: list[np.ndarray], names: list[str]
) -> None:
    """Refuse beads holding an atom without a positive, finite mass that is no virtual site
    (the topology had no mass for it and MDAnalysis could not guess one)."""
    mapped = np.concatenate(rows)
    light = ~(np.isfinite(masses[mapped]) & (masses[mapped] > 0))
    if light.any():
        first = int(np.flatnonzero(light)[0])
        atom = int(mapped[first])
        bead = names[int(np.searchsorted(np.cumsum([len(a) for a in rows]), first, "right"))]
        missing = sorted(set(universe.atoms[mapped[light]].names))
        raise MappingError(
            f"mapping {name!r}: atom {atom} ({_atom_words(universe, atom)}) of bead {bead!r} "
            f"has mass {masses[atom]:g} amu and is no virtual site (it has forces); atoms "
            f"named {', '.join(missing[:10])} have no mass; {_MASS_FIX}"
        )


def bead_bonds(position_map: sparse.spmatrix, bonds: np.ndarray) -> np.ndarray:
    """``[K, 2]`` bead pairs (i < j) joined by a covalent bond between their atoms or sharing
    an atom, from a ``[B, N]`` position map and ``[M, 2]`` atom bonds."""
    membership = sparse.csr_matrix(position_map).astype(bool).astype(np.int64)
    n_atoms = membership.shape[1]
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    adjacency = sparse.coo_matrix(
        (np.ones(len(bonds), dtype=np.int64), (bonds[:, 0], bonds[:, 1])),
        shape=(n_atoms, n_atoms),
    ).tocsr()
    linked = membership @ (adjacency + adjacency.T) @ membership.T + membership @ membership.T
    linked = sparse.coo_matrix(linked)
    keep = linked.row < linked.col
    pairs = np.stack([linked.row[keep], linked.col[keep]], axis=1)
    return np.unique(pairs, axis=0).astype(np.int64).reshape(-1, 2)


def _warn_unbonded_molecules(name: str, bonds: np.ndarray, bead_molecules: np.ndarray) -> None:
    """Warn when the beads of a molecule are not all joined by CG bonds."""
    n_beads = len(bead_molecules)
    graph = sparse.coo_matrix(
        (np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n_beads, n_beads)
    )
    n_parts, _ = connected_components(graph, directed=False)
    n_molecules = len(np.unique(bead_molecules))
    if n_parts > n_molecules:
        warnings.warn(
            f"mapping {name!r}: the beads of some molecules are not joined by CG bonds "
            f"({n_parts} bonded groups for {n_molecules} molecules), so bonded priors cannot "
            "hold them together; give the topology its bonds (e.g. PDB CONECT records)",
            UnbondedBeadsWarning,
            stacklevel=3,
        )
