"""Many-body local order of each bead: tetrahedral order q, Steinhardt q_l, coordination numbers
and local densities, as distributions over beads and frames with their exact means.

Each observable computes one value per centre bead (species ``centre``, or every bead) from its
neighbours (species ``neighbours``, or every other bead), frame by frame. The per-frame
functions :func:`tetrahedral_order`, :func:`steinhardt_order` and :func:`neighbour_counts` give
those per-bead values directly.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from functools import lru_cache

import numpy as np

from cgkd.geometry import nearest_neighbours, pair_vectors
from cgkd.observables.base import (
    HistogramObservable,
    NotComputableError,
    ObservableResult,
    check_within_half_box,
    orthorhombic_lengths,
)
from cgkd.observables.trajectory import Frame, Trajectory

Species = int | str | None


class PerBeadDistribution(HistogramObservable):
    """Distribution over ``edges`` of one value per centre bead, pooled over frames.

    ``y`` is the fraction of samples per unit of x (a probability density; per integer for
    counts), normalised by all samples, so it integrates to 1 minus the fraction outside the
    edges. ``attrs``: ``mean`` (exact mean over all samples, outside the edges too) and its
    block error ``mean_err``,
    ``n_samples`` (bead-frames) and ``fraction_outside`` (of samples beyond the edges; with
    ``fold_overflow`` those above are counted in the last bin instead).
    """

    fold_overflow = False

    def __init__(self, name: str, edges: np.ndarray, centre: Species, neighbours: Species) -> None:
        self.edges = edges
        self.x = 0.5 * (edges[:-1] + edges[1:])
        self.centre, self.neighbours = centre, neighbours
        self.name = name + _selection_suffix(centre, neighbours)

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        self._centres = runs[0].species_mask(self.centre, "centre")
        self._neighbours = runs[0].species_mask(self.neighbours, "neighbours")
        self._sums: list[float] = []
        self._n_outside = 0

    @abstractmethod
    def _per_bead(self, frame: Frame) -> np.ndarray:
        """Values of the sampled centre beads in one frame."""

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        values = self._per_bead(frame)
        self._sums.append(float(values.sum()))
        above = values > self.edges[-1]
        self._n_outside += int(np.count_nonzero(above | (values < self.edges[0])))
        if self.fold_overflow:
            values = np.where(above, self.edges[-1], values)
        counts, _ = np.histogram(values, bins=self.edges)
        return counts / np.diff(self.edges), float(len(values))

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        result = super()._result(y, yerr)
        n_samples = int(sum(self._weights))
        mean, error = self._block_average(np.asarray(self._sums)[:, None], self._weights)
        result.attrs.update(
            mean=float(mean[0]),
            mean_err=float(error[0]),
            n_samples=n_samples,
            fraction_outside=self._n_outside / n_samples,
        )
        return result


class TetrahedralOrder(PerBeadDistribution):
    """Errington-Debenedetti tetrahedral order q of each centre bead, density over ``q_range``.

    q_i = 1 - 3/8 sum_{j<k} (cos psi_jk + 1/3)^2 over the angles psi_jk at bead i between its
    four nearest neighbours (periodic): 1 for a perfect tetrahedron, mean 0 for an ideal gas,
    down to -3. Values outside ``q_range`` count towards ``attrs["fraction_outside"]``.
    """

    x_label = "q"
    y_label = "P(q)"

    def __init__(
        self,
        n_bins: int = 100,
        q_range: tuple[float, float] = (-1.0, 1.0),
        centre: Species = None,
        neighbours: Species = None,
    ) -> None:
        n_bins = _check_bins(n_bins)
        low, high = q_range
        if not low < high:
            raise ValueError(f"q_range must be (low, high) with low < high, got {q_range}")
        super().__init__("tetrahedral", np.linspace(low, high, n_bins + 1), centre, neighbours)

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        _tetrahedral_query(runs[0].name, self._centres, self._neighbours)

    def _per_bead(self, frame: Frame) -> np.ndarray:
        return tetrahedral_order(frame, self._centres, self._neighbours)


class Steinhardt(PerBeadDistribution):
    """Steinhardt bond order q_l of each centre bead, density over [0, 1].

    ``q_l(i) = sqrt(4 pi / (2l + 1) sum_m |q_lm(i)|^2)`` with q_lm(i) the mean of Y_lm over the
    bonds to the neighbours within ``cutoff`` (nm). Beads without neighbours are left out;
    ``attrs["fraction_without_neighbours"]`` is their share of the centre bead-frames.
    Perfect lattices: fcc q4 = 0.19094, q6 = 0.57452; bcc (8 neighbours) q4 = 0.50918,
    q6 = 0.62854; simple cubic q4 = 0.76376, q6 = 0.35355.
    """

    def __init__(
        self,
        l: int,  # noqa: E741 (the conventional name of the degree)
        cutoff: float,
        n_bins: int = 100,
        centre: Species = None,
        neighbours: Species = None,
    ) -> None:
        if isinstance(l, bool) or int(l) != l or l < 1:
            raise ValueError(f"l must be an integer >= 1 (e.g. 4 or 6), got {l}")
        _check_distance("cutoff", cutoff)
        n_bins = _check_bins(n_bins)
        self.l, self.cutoff = int(l), float(cutoff)
        self.x_label = f"q_{self.l}"
        self.y_label = f"P(q_{self.l})"
        super().__init__(f"q{self.l}", np.linspace(0.0, 1.0, n_bins + 1), centre, neighbours)

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        self._n_without = 0

    def _per_bead(self, frame: Frame) -> np.ndarray:
        q = steinhardt_order(frame, self.l, self.cutoff, self._centres, self._neighbours)
        missing = np.isnan(q)
        self._n_without += int(np.count_nonzero(missing))
        return q[~missing]

    def _conclude(self, n_blocks: int) -> ObservableResult:
        if sum(self._weights) == 0:
            raise NotComputableError(
                f"{self.name}: no centre bead has a neighbour within cutoff={self.cutoff} nm; "
                "increase cutoff"
            )
        return super()._conclude(n_blocks)

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        result = super()._result(y, yerr)
        result.attrs["fraction_without_neighbours"] = self._n_without / (
            self._n_without + result.attrs["n_samples"]
        )
        return result


class CoordinationNumbers(PerBeadDistribution):
    """Probability of each number n = 0 .. ``max_count`` of neighbours within ``cutoff`` (nm).

    Beads with more than ``max_count`` neighbours are counted in the last bin (read it as
    n >= max_count); ``attrs["fraction_outside"]`` says how many, and ``attrs["mean"]`` uses
    the true counts.
    """

    x_label = "n"
    y_label = "P(n)"
    fold_overflow = True

    def __init__(
        self,
        cutoff: float,
        max_count: int = 24,
        centre: Species = None,
        neighbours: Species = None,
    ) -> None:
        _check_distance("cutoff", cutoff)
        self.cutoff = float(cutoff)
        edges = np.arange(_check_count(max_count) + 2) - 0.5
        super().__init__("coordination numbers", edges, centre, neighbours)

    def _per_bead(self, frame: Frame) -> np.ndarray:
        return neighbour_counts(frame, self.cutoff, self._centres, self._neighbours)


class LocalDensity(PerBeadDistribution):
    """Number density (nm^-3) of the other beads within ``radius`` (nm) of each centre bead.

    rho_i = n_i / (4/3 pi radius^3) for the integer count n_i, so the bins are centred on the
    densities of n = 0 .. ``max_count`` (larger counts go in the last bin, as in
    :class:`CoordinationNumbers`); ``y`` is a probability density in nm^3.
    """

    x_label = "local density (nm^-3)"
    y_label = "P (nm^3)"
    fold_overflow = True

    def __init__(
        self,
        radius: float,
        max_count: int = 64,
        centre: Species = None,
        neighbours: Species = None,
    ) -> None:
        _check_distance("radius", radius)
        self.radius = float(radius)
        self.volume = 4.0 / 3.0 * np.pi * self.radius**3
        edges = (np.arange(_check_count(max_count) + 2) - 0.5) / self.volume
        super().__init__("local density", edges, centre, neighbours)

    def _per_bead(self, frame: Frame) -> np.ndarray:
        check_within_half_box("radius", self.radius, frame.box)
        counts = neighbour_counts(frame, self.radius, self._centres, self._neighbours)
        return counts / self.volume


def tetrahedral_order(
    frame: Frame, centres: np.ndarray | None = None, neighbours: np.ndarray | None = None
) -> np.ndarray:
    """Tetrahedral order q of each centre bead (index order) from its 4 nearest neighbours.

    ``centres`` and ``neighbours`` [N] bool select the beads (None: all); a bead is never its
    own neighbour.
    """
    centres, neighbours = _masks(frame, centres, neighbours)
    orthorhombic_lengths("tetrahedral order", frame.box)
    centre = np.flatnonzero(centres)
    candidates = np.flatnonzero(neighbours)
    k = _tetrahedral_query(f"frame {frame.index}", centres, neighbours)
    positions = frame.positions
    nearest, _, bonds = nearest_neighbours(positions[centre], positions[candidates], frame.box, k)
    nearest = candidates[nearest]
    if k == 5:
        # Drop the bead itself; beads that are not neighbours drop their 5th nearest instead.
        keep = nearest != centre[:, None]
        keep[keep.all(axis=1), 4] = False
        bonds = bonds[keep].reshape(len(centre), 4, 3)
    bonds /= np.linalg.norm(bonds, axis=2, keepdims=True)
    cosines = np.einsum("nad,nbd->nab", bonds, bonds)
    upper = np.triu_indices(4, 1)
    return 1.0 - 0.375 * np.sum((cosines[:, upper[0], upper[1]] + 1.0 / 3.0) ** 2, axis=1)


def steinhardt_order(
    frame: Frame,
    l: int,  # noqa: E741 (the conventional name of the degree)
    cutoff: float,
    centres: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """Steinhardt q_l of each centre bead (index order) over its neighbours within ``cutoff``
    (nm); NaN for beads without neighbours.

    Uses real harmonics: Y_lm e^{-i m phi} is proportional to the m-th derivative of P_l(z)
    times (x + i y)^m for the unit bond (x, y, z), so no trigonometric functions are needed.
    """
    centres, neighbours = _masks(frame, centres, neighbours)
    centre, bonds = _directed_pairs(frame, cutoff, centres, neighbours)
    bonds /= np.linalg.norm(bonds, axis=1, keepdims=True)
    z, xy = bonds[:, 2], bonds[:, 0] + 1j * bonds[:, 1]
    n = len(frame.positions)
    squares = np.zeros(n)
    power = np.ones_like(xy)
    for coefficients in _harmonic_polynomials(int(l)):
        term = power * np.polynomial.polynomial.polyval(z, coefficients)
        squares += np.bincount(centre, term.real, n) ** 2 + np.bincount(centre, term.imag, n) ** 2
        power *= xy
    counts = np.bincount(centre, minlength=n)[centres]
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.sqrt(squares[centres]) / counts
    # q_l <= 1 exactly; rounding can exceed it by ~1e-16.
    return np.where(counts > 0, np.minimum(q, 1.0), np.nan)


def neighbour_counts(
    frame: Frame,
    cutoff: float,
    centres: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
) -> np.ndarray:
    """Number of other neighbour beads within ``cutoff`` (nm) of each centre bead (index order).

    ``centres`` and ``neighbours`` [N] bool select the beads (None: all).
    """
    centres, neighbours = _masks(frame, centres, neighbours)
    centre, _ = _directed_pairs(frame, cutoff, centres, neighbours)
    return np.bincount(centre, minlength=len(frame.positions))[centres]


@lru_cache
def _harmonic_polynomials(l: int) -> tuple[np.ndarray, ...]:  # noqa: E741
    """Power-series coefficients of sqrt(c_m (l-m)!/(l+m)!) d^m P_l/dz^m for m = 0..l.

    With c_0 = 1, c_m = 2 (the +-m pair), sum_m |mean (x+iy)^m poly_m(z)|^2 = q_l^2.
    """
    legendre = np.polynomial.legendre.leg2poly(np.eye(l + 1)[l])
    return tuple(
        np.polynomial.polynomial.polyder(legendre, m)
        * math.sqrt((1 if m == 0 else 2) * math.factorial(l - m) / math.factorial(l + m))
        for m in range(l + 1)
    )


def _directed_pairs(
    frame: Frame, cutoff: float, centres: np.ndarray, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Index [M] of the centre of every centre -> other-neighbour pair within ``cutoff`` (nm)
    and its minimum-image bond vector [M, 3] (nm), after checking that ``cutoff`` is within
    half the box."""
    check_within_half_box("cutoff", cutoff, frame.box)
    beads = np.flatnonzero(centres | neighbours)
    first, second, vectors = pair_vectors(frame.positions[beads], frame.box, cutoff)
    first, second = beads[first], beads[second]
    centre = np.concatenate([first, second])
    neighbour = np.concatenate([second, first])
    bonds = np.concatenate([vectors, -vectors])
    keep = centres[centre] & neighbours[neighbour]
    return centre[keep], bonds[keep]


def _masks(
    frame: Frame, centres: np.ndarray | None, neighbours: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The [N] bool selections, all beads where None."""
    everyone = np.ones(len(frame.positions), dtype=bool)
    return (
        everyone if centres is None else np.asarray(centres, dtype=bool),
        everyone if neighbours is None else np.asarray(neighbours, dtype=bool),
    )


def _tetrahedral_query(name: str, centres: np.ndarray, neighbours: np.ndarray) -> int:
    """Nearest beads to query per centre: 5 when centres can find themselves, else 4."""
    k = 5 if np.any(centres & neighbours) else 4
    if np.count_nonzero(neighbours) < k:
        raise NotComputableError(
            f"{name}: tetrahedral order needs 4 neighbours besides each centre but only "
            f"{np.count_nonzero(neighbours)} neighbour beads are selected; check neighbours"
        )
    return k


def _selection_suffix(centre: Species, neighbours: Species) -> str:
    """Name suffix: ' a' for centre a, ' a-b' with neighbours b ('all' for no centre)."""
    if neighbours is None:
        return "" if centre is None else f" {centre}"
    return f" {'all' if centre is None else centre}-{neighbours}"


def _check_bins(n_bins: int) -> int:
    """``n_bins`` as an int; ValueError unless it is a whole number >= 1."""
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins}")
    return int(n_bins)


def _check_count(max_count: int) -> int:
    """``max_count`` as an int; ValueError unless it is a whole number >= 1."""
    if isinstance(max_count, bool) or int(max_count) != max_count or max_count < 1:
        raise ValueError(f"max_count must be an integer >= 1, got {max_count}")
    return int(max_count)


def _check_distance(name: str, value: float) -> None:
    """ValueError unless the distance ``value`` (nm) called ``name`` is positive."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0 nm, got {value}")
