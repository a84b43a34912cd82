"""Bonded structure: the distribution of the lengths of the bonds between beads of one molecule
(a multi-bead mapping's CG bonds), over every bond or over the bonds of one species pair.

A model can keep every bead apart and in the box, and so pass the stability check, while its
bonds slowly settle at a length the reference never visits; this distribution, and the share
of it outside the reference's range (:func:`cgkd.observables.compare.outside_fraction`), show
it.
"""

from __future__ import annotations

import numpy as np

from cgkd.geometry import minimum_image
from cgkd.observables.base import (
    HistogramObservable,
    NotComputableError,
    ObservableResult,
    uniform_bins,
)
from cgkd.observables.trajectory import Frame, Trajectory


class BondLengths(HistogramObservable):
    """Probability density (1/nm) of bond lengths in [0, ``r_max``] nm, over ``n_bins`` bins;
    a longer bond counts in the last bin, so that a stretched bond still weighs.

    ``pair=(a, b)`` (species names) keeps the bonds between a bead of a and one of b; None
    keeps every bond. ``attrs["mean"]`` is the mean length (nm), with its error.
    """

    x_label = "bond length (nm)"
    y_label = "P(b) (1/nm)"

    def __init__(
        self, r_max: float = 0.6, n_bins: int = 120, pair: tuple[str, str] | None = None
    ) -> None:
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        self.r_max = float(r_max)
        self.pair = pair
        self.edges, self.x = uniform_bins(0.0, self.r_max, n_bins)
        self.name = "bonds" if pair is None else f"bonds {pair[0]}-{pair[1]}"

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        run = runs[0]
        bonds = run.bonds
        if self.pair is not None:
            pair = sorted(run.species_index(species) for species in self.pair)
            bonds = bonds[(bond_kinds(run) == pair).all(axis=1)]
        if not len(bonds):
            raise NotComputableError(
                f"{self.name}: {runs[0].name} has no such bonds; switch analysis.bonds off"
            )
        self._bonds = bonds
        self._means: list[float] = []

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        vectors = frame.positions[self._bonds[:, 1]] - frame.positions[self._bonds[:, 0]]
        lengths = np.linalg.norm(minimum_image(vectors, frame.box), axis=-1)
        self._means.append(float(lengths.mean()))
        counts, _ = np.histogram(np.minimum(lengths, self.edges[-1] - 1e-12), bins=self.edges)
        return counts / (np.diff(self.edges) * len(lengths)), 1.0

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        result = super()._result(y, yerr)
        mean, error = self._block_average(np.array(self._means), self._weights)
        result.attrs.update(mean=float(mean), mean_err=float(error), n_bonds=len(self._bonds))
        return result


def bond_kinds(trajectory: Trajectory) -> np.ndarray:
    """[K, 2] the species indices of the two beads of each of the trajectory's bonds, lower
    first."""
    return np.sort(trajectory.types[trajectory.bonds], axis=1)


def build_bond_lengths(r_max: float, n_bins: int, trajectory: Trajectory) -> list[BondLengths]:
    """The bond-length distributions of a trajectory with bonds: over every bond and, when the
    bonds join more than one species pair, over each pair's; none without bonds."""
    if not len(trajectory.bonds):
        return []
    built = [BondLengths(r_max, n_bins)]
    kinds = np.unique(bond_kinds(trajectory), axis=0)
    if len(kinds) > 1:
        names = trajectory.type_names
        built += [BondLengths(r_max, n_bins, (names[a], names[b])) for a, b in kinds]
    return built
