"""Physical priors added to the network energy: a pair repulsion so beads cannot collapse,
and harmonic bonds and angles that hold multi-bead molecules together.

Every prior is fitted from the mapped reference data: the repulsion from the onset of the
reference RDF of each species pair, bonds and angles by Boltzmann inversion of their
distributions. A prior is described by a JSON-friendly dict (see :func:`fit_priors`), which
:func:`build_priors` turns into the module that the CG potential adds to every model.
Lengths are nm, angles radians, energies kJ/mol.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cgkd.geometry import (
    box_volume,
    distance_histogram,
    minimum_image,
    minimum_image_batch,
    pair_vectors,
)


class PairRepulsion(nn.Module):
    """Per-species-pair repulsion U(r) = epsilon (sigma_ab / r)^12 S(r), in kJ/mol.

    ``sigma_ab`` (nm) is the onset of the reference RDF of the pair, so the prior is
    about k_B T at the closest distance ever sampled and grows steeply below it.
    S(r) switches smoothly (cos^2) from 1 at sigma to 0 at ``switch_factor * sigma``,
    so the prior vanishes where the reference data live.
    """

    def __init__(self, sigma: Tensor, epsilon: float, switch_factor: float = 1.5):
        super().__init__()
        if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(
                f"sigma must be a square [n_species, n_species] matrix, got {list(sigma.shape)}"
            )
        if switch_factor <= 1.0:
            raise ValueError(f"switch_factor {switch_factor} must exceed 1")
        self.register_buffer("sigma", sigma.to(torch.float32))
        self.epsilon = float(epsilon)
        self.switch_factor = float(switch_factor)

    @property
    def reach(self) -> float:
        """Largest distance (nm) at which the prior acts."""
        return float(self.sigma.max()) * self.switch_factor

    def forward(self, species_first: Tensor, species_second: Tensor, distances: Tensor) -> Tensor:
        """Energies [P] (kJ/mol) of pairs with the given species and distances (nm)."""
        sigma = self.sigma[species_first, species_second].to(distances.dtype)
        r_off = sigma * self.switch_factor
        x = torch.clamp((distances - sigma) / (r_off - sigma), 0.0, 1.0)
        switch = torch.where(x < 1.0, torch.cos(0.5 * math.pi * x) ** 2, torch.zeros_like(x))
        return self.epsilon * (sigma / distances) ** 12 * switch


class HarmonicBonds(nn.Module):
    """U = k/2 (r - r0)^2 for bead pairs [K, 2]; half of each bond's energy goes to each bead.

    ``r0`` (nm) and ``k`` (kJ/mol/nm^2) are per bond, [K]. With no bonds the energy is zero.
    """

    def __init__(self, pairs: Tensor, r0: Tensor, k: Tensor):
        super().__init__()
        self.register_buffer("pairs", pairs.to(torch.long).reshape(-1, 2))
        self.register_buffer("r0", r0.to(torch.float32).reshape(-1))
        self.register_buffer("k", k.to(torch.float32).reshape(-1))

    def forward(self, positions: Tensor, boxes: Tensor) -> Tensor:
        """Bond energy of every bead, [B, N] in kJ/mol, for positions [B, N, 3] (nm)."""
        energies = torch.zeros(positions.shape[:2], dtype=positions.dtype, device=positions.device)
        if self.pairs.shape[0] == 0:
            return energies
        first, second = self.pairs[:, 0], self.pairs[:, 1]
        bonds = minimum_image_batch(positions[:, second] - positions[:, first], boxes)
        stretch = torch.linalg.norm(bonds, dim=-1) - self.r0.to(positions.dtype)
        half = 0.25 * self.k.to(positions.dtype) * stretch * stretch
        return energies.index_add(1, first, half).index_add(1, second, half)


class HarmonicAngles(nn.Module):
    """U = k/2 (theta - theta0)^2 for bead triples [K, 3] (i, j, k), j the vertex; a third of
    each angle's energy goes to each bead. ``theta0`` (rad) and ``k`` (kJ/mol/rad^2) are [K]."""

    def __init__(self, triples: Tensor, theta0: Tensor, k: Tensor):
        super().__init__()
        self.register_buffer("triples", triples.to(torch.long).reshape(-1, 3))
        self.register_buffer("theta0", theta0.to(torch.float32).reshape(-1))
        self.register_buffer("k", k.to(torch.float32).reshape(-1))

    def forward(self, positions: Tensor, boxes: Tensor) -> Tensor:
        """Angle energy of every bead, [B, N] in kJ/mol, for positions [B, N, 3] (nm)."""
        energies = torch.zeros(positions.shape[:2], dtype=positions.dtype, device=positions.device)
        if self.triples.shape[0] == 0:
            return energies
        a, vertex, c = self.triples[:, 0], self.triples[:, 1], self.triples[:, 2]
        u = minimum_image_batch(positions[:, a] - positions[:, vertex], boxes)
        v = minimum_image_batch(positions[:, c] - positions[:, vertex], boxes)
        cosine = torch.sum(u * v, dim=-1) / (
            torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1)
        )
        # Clamped away from +-1, where d acos / d cos diverges.
        theta = torch.acos(torch.clamp(cosine, -1.0 + 1e-6, 1.0 - 1e-6))
        bend = theta - self.theta0.to(positions.dtype)
        third = self.k.to(positions.dtype) * bend * bend / 6.0
        return energies.index_add(1, a, third).index_add(1, vertex, third).index_add(1, c, third)


class Priors(nn.Module):
    """All priors of one CG system: repulsion between non-excluded pairs, bonds and angles.

    Args:
        n_beads: beads in the system (the bonded terms and exclusions index them).
        repulsion: the pair repulsion, or None.
        bonds, angles: the bonded terms (possibly empty).
        exclusions: [E, 2] bead pairs the repulsion skips (bonded and 1-3 pairs).
    """

    def __init__(
        self,
        n_beads: int,
        repulsion: PairRepulsion | None,
        bonds: HarmonicBonds,
        angles: HarmonicAngles,
        exclusions: Tensor,
    ):
        super().__init__()
        self.n_beads = int(n_beads)
        self.use_repulsion = repulsion is not None
        self.repulsion = repulsion if repulsion is not None else PairRepulsion(torch.zeros(1, 1), 0)
        self.bonds = bonds
        self.angles = angles
        pairs = exclusions.to(torch.long).reshape(-1, 2)
        keys = torch.cat([pairs[:, 0] * n_beads + pairs[:, 1], pairs[:, 1] * n_beads + pairs[:, 0]])
        self.register_buffer("excluded_keys", torch.unique(keys))

    @property
    def reach(self) -> float:
        """Largest pair distance (nm) at which the repulsion acts (0 without one)."""
        return self.repulsion.reach if self.use_repulsion else 0.0

    def forward(
        self,
        positions: Tensor,
        boxes: Tensor,
        flat_species: Tensor,
        first: Tensor,
        second: Tensor,
        vectors: Tensor,
    ) -> Tensor:
        """Prior energy of every bead, [B * N] in kJ/mol, given the neighbour pairs (flat
        indices into B * N, both directions) and their vectors (nm)."""
        n_frames = positions.shape[0]
        if positions.shape[1] != self.n_beads:
            raise ValueError(
                f"the priors were fitted for {self.n_beads} beads, got {positions.shape[1]}"
            )
        energies = (self.bonds(positions, boxes) + self.angles(positions, boxes)).reshape(-1)
        if self.use_repulsion:
            distances = torch.linalg.norm(vectors, dim=-1)
            pair_energy = self.repulsion(flat_species[first], flat_species[second], distances)
            if self.excluded_keys.shape[0] > 0:
                keys = (first % self.n_beads) * self.n_beads + second % self.n_beads
                excluded = torch.isin(keys, self.excluded_keys)
                pair_energy = torch.where(excluded, torch.zeros_like(pair_energy), pair_energy)
            # Each pair is listed in both directions: half its energy goes to each bead.
            energies = energies.index_add(0, first, 0.5 * pair_energy)
        return energies.view(n_frames * self.n_beads)


@dataclass(frozen=True)
class CGTopology:
    """Bonded structure of a CG system: bonds [K, 2] and the angles [A, 3] they imply
    (vertex in the middle), bead species [N] and species names."""

    bonds: np.ndarray
    types: np.ndarray
    type_names: list[str]

    @property
    def n_beads(self) -> int:
        """Number of beads."""
        return len(self.types)

    @property
    def angles(self) -> np.ndarray:
        """[A, 3] bead triples (i, j, k), i < k, whose bonds i-j and j-k exist."""
        neighbours: list[list[int]] = [[] for _ in range(self.n_beads)]
        for i, j in self.bonds.tolist():
            neighbours[i].append(j)
            neighbours[j].append(i)
        triples = [
            (a, vertex, c)
            for vertex, around in enumerate(neighbours)
            for index, a in enumerate(sorted(around))
            for c in sorted(around)[index + 1 :]
        ]
        return np.asarray(triples, dtype=np.int64).reshape(-1, 3)

    @property
    def exclusions(self) -> np.ndarray:
        """[E, 2] bead pairs joined by a bond or an angle (the repulsion skips them)."""
        angles = self.angles
        pairs = np.concatenate([self.bonds.reshape(-1, 2), angles[:, [0, 2]]])
        return np.unique(np.sort(pairs, axis=1), axis=0).reshape(-1, 2)

    def term_names(self, beads: np.ndarray) -> list[str]:
        """Name of the term of each row of ``beads`` ([K, 2] or [K, 3]) from its species,
        written in canonical order (reversed when that sorts first), e.g. ``CHN-CHO``."""
        names = []
        for row in beads.tolist():
            species = [self.type_names[self.types[b]] for b in row]
            names.append("-".join(min(species, species[::-1])))
        return names


def rdf_onsets(
    positions: np.ndarray,
    boxes: np.ndarray,
    topology: CGTopology,
    r_max: float,
    threshold: float = 0.01,
    n_bins: int = 200,
) -> np.ndarray:
    """Onset (nm) of the reference RDF of every species pair, [S, S]: the first bin centre
    where g(r) > ``threshold``, counting only pairs the repulsion acts on (bonded and 1-3
    pairs excluded). A species pair never closer than ``r_max`` is a ValueError.

    Args:
        positions: [T, N, 3] reference bead positions, nm. boxes: [T, 3, 3] nm.
    """
    n_species = len(topology.type_names)
    types = np.asarray(topology.types)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros((n_species, n_species, n_bins))
    exclusions = topology.exclusions
    excluded = exclusions[:, 0] * topology.n_beads + exclusions[:, 1]
    volume = 0.0
    for frame in range(len(positions)):
        first, second, vectors = pair_vectors(positions[frame], boxes[frame], r_max)
        keep = ~np.isin(first * topology.n_beads + second, excluded)
        distances = np.linalg.norm(vectors[keep], axis=1)
        a, b = np.sort(np.stack([types[first[keep]], types[second[keep]]]), axis=0)
        pair_kind = a * n_species + b
        counts += distance_histogram(distances, edges, pair_kind, n_species * n_species).reshape(
            n_species, n_species, n_bins
        )
        volume += box_volume(boxes[frame])
    shells = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    population = np.bincount(types, minlength=n_species).astype(float)
    sigma = np.zeros((n_species, n_species))
    for a in range(n_species):
        for b in range(a, n_species):
            if a == b:
                n_pairs = population[a] * (population[a] - 1) / 2
            else:
                n_pairs = population[a] * population[b]
            density = max(n_pairs, 1.0) / (volume / len(positions))
            g = counts[a, b] / (len(positions) * density * shells)
            above = np.flatnonzero(g > threshold)
            if len(above) == 0:
                names = f"{topology.type_names[a]}-{topology.type_names[b]}"
                raise ValueError(
                    f"no {names} pairs closer than {r_max:.2f} nm in the reference data, so the "
                    "repulsion onset cannot be fitted; use more frames, a lower "
                    "prior.repulsion.rdf_threshold, or prior.repulsion.enabled=false"
                )
            sigma[a, b] = sigma[b, a] = 0.5 * (edges[above[0]] + edges[above[0] + 1])
    return sigma


def boltzmann_harmonic(
    values: np.ndarray, temperature_kt: float, jacobian: str, n_bins: int = 60
) -> tuple[float, float]:
    """Centre and force constant of the harmonic U(q) = k/2 (q - q0)^2 fitted by Boltzmann
    inversion, U(q) = -kT ln(P(q) / J(q)), to samples ``values`` of a bond length (nm,
    ``jacobian="bond"``, J = q^2) or angle (rad, ``jacobian="angle"``, J = sin q).

    A weighted least-squares parabola through the inverted histogram; a distribution too
    narrow or flat for that falls back to the Gaussian estimate k = kT / var(q).
    """
    values = np.asarray(values, dtype=float).ravel()
    spread = float(values.std())
    if spread == 0.0:
        raise ValueError("all samples of this bonded term are equal; it cannot be fitted")
    counts, edges = np.histogram(values, bins=n_bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    factor = centres**2 if jacobian == "bond" else np.sin(centres)
    used = (counts >= 5) & (factor > 0)
    if used.sum() >= 5:
        energy = -temperature_kt * np.log(counts[used] / factor[used])
        curvature, slope, _ = np.polyfit(centres[used], energy, 2, w=np.sqrt(counts[used]))
        if curvature > 0:
            return float(-slope / (2.0 * curvature)), float(2.0 * curvature)
    warnings.warn(
        "bonded distribution too narrow or flat for a Boltzmann-inversion fit; using the "
        "Gaussian estimate k = kT / var",
        stacklevel=2,
    )
    return float(values.mean()), temperature_kt / spread**2


def bond_lengths(positions: np.ndarray, boxes: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """[T, K] minimum-image lengths (nm) of the ``bonds`` [K, 2] in frames ``positions``
    [T, N, 3] with ``boxes`` [T, 3, 3] (nm)."""
    return np.linalg.norm(
        minimum_image(positions[:, bonds[:, 1]] - positions[:, bonds[:, 0]], boxes), axis=-1
    )


def _angle_values(positions: np.ndarray, boxes: np.ndarray, triples: np.ndarray) -> np.ndarray:
    u = minimum_image(positions[:, triples[:, 0]] - positions[:, triples[:, 1]], boxes)
    v = minimum_image(positions[:, triples[:, 2]] - positions[:, triples[:, 1]], boxes)
    cosine = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.arccos(np.clip(cosine, -1.0, 1.0))


def _fit_terms(
    values: np.ndarray, names: list[str], temperature_kt: float, jacobian: str
) -> dict[str, Any]:
    """Per-type harmonic parameters from the values [T, K] of every instance of the term."""
    kinds = sorted(set(names))
    kind_of = np.array([kinds.index(name) for name in names], dtype=np.int64)
    centres, constants = [], []
    for index in range(len(kinds)):
        centre, constant = boltzmann_harmonic(values[:, kind_of == index], temperature_kt, jacobian)
        centres.append(centre)
        constants.append(constant)
    return {"names": kinds, "kind": kind_of.tolist(), "centre": centres, "k": constants}


def fit_priors(
    positions: np.ndarray,
    boxes: np.ndarray,
    topology: CGTopology,
    temperature_kt: float,
    *,
    repulsion: dict[str, Any] | None,
    bonds: bool,
    angles: bool,
    r_max: float,
) -> dict[str, Any]:
    """The priors of a CG system fitted to reference frames, as a JSON-friendly dict.

    Args:
        positions: [T, N, 3] nm. boxes: [T, 3, 3] nm. temperature_kt: k_B T, kJ/mol.
        repulsion: ``{rdf_threshold, epsilon_kt, switch_factor}`` or None for no repulsion.
        bonds, angles: whether to fit harmonic bond and angle priors.
        r_max: largest distance (nm) searched for the RDF onsets.
    """
    prior: dict[str, Any] = {
        "n_beads": topology.n_beads,
        "exclusions": topology.exclusions.tolist(),
        "repulsion": None,
        "bonds": None,
        "angles": None,
    }
    if repulsion is not None:
        sigma = rdf_onsets(positions, boxes, topology, r_max, repulsion["rdf_threshold"])
        prior["repulsion"] = {
            "sigma": sigma.tolist(),
            "epsilon": repulsion["epsilon_kt"] * temperature_kt,
            "switch_factor": repulsion["switch_factor"],
        }
    pairs, triples = topology.bonds, topology.angles
    if bonds and len(pairs):
        values = bond_lengths(positions, boxes, pairs)
        fitted = _fit_terms(values, topology.term_names(pairs), temperature_kt, "bond")
        prior["bonds"] = {"beads": pairs.tolist(), **fitted}
    if angles and len(triples):
        values = _angle_values(positions, boxes, triples)
        fitted = _fit_terms(values, topology.term_names(triples), temperature_kt, "angle")
        prior["angles"] = {"beads": triples.tolist(), **fitted}
    return prior


def build_priors(prior: dict[str, Any]) -> Priors:
    """The :class:`Priors` module described by a dict from :func:`fit_priors`."""
    repulsion = None
    if prior["repulsion"] is not None:
        spec = prior["repulsion"]
        repulsion = PairRepulsion(
            torch.as_tensor(spec["sigma"]), spec["epsilon"], spec["switch_factor"]
        )
    terms = []
    for name, width in (("bonds", 2), ("angles", 3)):
        spec = prior[name]
        if spec is None:
            terms.append((torch.zeros(0, width), torch.zeros(0), torch.zeros(0)))
            continue
        kind = torch.as_tensor(spec["kind"], dtype=torch.long)
        terms.append(
            (
                torch.as_tensor(spec["beads"]),
                torch.as_tensor(spec["centre"], dtype=torch.float64)[kind],
                torch.as_tensor(spec["k"], dtype=torch.float64)[kind],
            )
        )
    return Priors(
        prior["n_beads"],
        repulsion,
        HarmonicBonds(*terms[0]),
        HarmonicAngles(*terms[1]),
        torch.as_tensor(prior["exclusions"], dtype=torch.long).reshape(-1, 2),
    )
