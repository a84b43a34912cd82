"""Static structure factor S(q): from an RDF by Fourier transform, or directly from densities.

Both give S(q) = <|rho(k)|^2> / N with rho(k) = sum_j exp(i k.r_j) over the beads considered
(all beads, or one species: the partial ``S_aa(q) = <|rho_a(k)|^2> / N_a``), ``q = |k|`` in nm^-1.
:func:`structure_factor` transforms a finished g(r) (cheap, any q, but truncated at the RDF's
r_max); :class:`StructureFactor` sums over the box's reciprocal-lattice vectors (exact for the
frames, only at ``q = |k|`` of the lattice, no truncation).
"""

from __future__ import annotations

import numpy as np

from cgkd.observables.base import (
    HistogramObservable,
    ObservableResult,
    orthorhombic_lengths,
    uniform_bins,
)
from cgkd.observables.blocks import block_average
from cgkd.observables.trajectory import Frame, Trajectory

#: Upper end (nm^-1) of :func:`structure_factor`'s default q grid.
DEFAULT_Q_MAX: float = 50.0
#: Points of the default q grid.
DEFAULT_N_Q: int = 256
#: Windows :func:`structure_factor` knows: Lorch's sin(pi r/R)/(pi r/R), or none (a step at R).
WINDOWS: tuple[str, ...] = ("lorch", "none")
#: Gauss-Legendre nodes per RDF bin in the transform (exact for a g(r) constant on each bin).
GAUSS_NODES: int = 8
#: Complex entries (16 B each) of the direct sum's per-block [beads, ny * nz] factor matrix.
BLOCK_ELEMENTS: int = 2**22


def structure_factor(
    rdf: ObservableResult, q: np.ndarray | None = None, window: str = "lorch"
) -> ObservableResult:
    """S(q) = 1 + 4 pi rho int_0^R r^2 (g(r) - 1) sin(qr)/(qr) W(r) dr from an RDF result.

    ``rho`` is ``rdf.attrs["density"]`` (nm^-3) and R the RDF's upper edge r_max (nm); g(r) is
    taken as constant on each bin, whose integral is 8-point Gauss-Legendre (exact to rounding
    while q times the bin width is below ~3).
    ``window="lorch"`` tapers with W(r) = sin(pi r/R)/(pi r/R), trading the ripples of the cut
    at R for peaks broadened by about 2 pi/R; ``"none"`` keeps W = 1. ``q`` (nm^-1, >= 0)
    defaults to 256 points from 2 pi/R to 50 nm^-1. Errors propagate the RDF's ``yerr``
    linearly, treating bins as independent (their covariance and the density's error are
    left out). Only an RDF of all beads (``"rdf"``) or of one species (``"rdf A-A"``) is
    accepted: a cross-species partial needs both species' densities, which the result lacks.
    """
    if "density" not in rdf.attrs or rdf.is_2d:
        raise ValueError(f"{rdf.name!r} is not an RDF result with attrs['density']; compute an RDF")
    if not rdf.attrs.get("same_species", False):
        raise ValueError(
            f"{rdf.name!r} is not an RDF of all beads ('rdf') or of one species ('rdf A-A'); "
            "cross-species S(q) is not supported, use RDF(pair=(a, a)) or pair=None"
        )
    if window not in WINDOWS:
        raise ValueError(f"window={window!r} is unknown; use one of {list(WINDOWS)}")
    width = rdf.x[1] - rdf.x[0] if len(rdf.x) > 1 else 2.0 * rdf.x[0]
    r_max = float(rdf.x[-1] + 0.5 * width)
    if q is None:
        if 2.0 * np.pi / r_max >= DEFAULT_Q_MAX:
            raise ValueError(
                f"RDF r_max={r_max:.4g} nm is too short for the default q grid "
                f"[2 pi/r_max, {DEFAULT_Q_MAX}] nm^-1; pass q"
            )
        q = np.linspace(2.0 * np.pi / r_max, DEFAULT_Q_MAX, DEFAULT_N_Q)
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 1 or len(q) == 0 or not np.all(np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"q must be a non-empty 1-D array of finite values >= 0 nm^-1, got {q}")
    nodes, weights = np.polynomial.legendre.leggauss(GAUSS_NODES)
    r = rdf.x[:, None] + 0.5 * width * nodes  # [bins, nodes], nm
    taper = np.sinc(r / r_max) if window == "lorch" else 1.0  # np.sinc(x) = sin(pi x)/(pi x)
    measure = 4.0 * np.pi * rdf.attrs["density"] * 0.5 * width * weights * r**2 * taper
    kernel = np.einsum("qbn,bn->qb", np.sinc(q[:, None, None] * r / np.pi), measure)  # [q, bins]
    s = 1.0 + kernel @ (rdf.y - 1.0)
    error = np.sqrt(kernel**2 @ rdf.yerr**2)
    attrs = {**rdf.attrs, "window": window, "r_max": r_max}
    name = rdf.name.replace("rdf", "S(q)", 1)
    return ObservableResult(name, q, s, error, "q (nm^-1)", "S(q)", attrs=attrs)


class StructureFactor(HistogramObservable):
    """``S(q) = |sum_j exp(i k.r_j)|^2 / N`` averaged over reciprocal-lattice vectors in q shells.

    The box's vectors k = 2 pi (nx/Lx, ny/Ly, nz/Lz) with ``q_min <= |k| < q_max`` (nm^-1;
    k = 0 always left out) are binned into ``n_bins`` uniform shells of ``|k|``; each frame gives
    the mean of ``|rho(k)|^2 / N`` over its k in each shell, and frames are averaged. Only one of
    k and -k is summed (same ``|rho(k)|^2``). ``species`` (name or index) restricts the beads to
    one species, giving the partial S_aa(q); by default all beads. The k-vectors are rebuilt
    whenever the box changes, so a shell can hold k-vectors in some frames only: it is
    averaged over those frames, and is NaN (y and yerr) when no frame had any. The result's
    ``attrs`` add ``n_beads`` (N) and ``n_k`` (k-vectors per frame, one per +-k pair, mean).
    """

    x_label = "q (nm^-1)"
    y_label = "S(q)"

    def __init__(
        self,
        q_max: float,
        n_bins: int,
        *,
        q_min: float = 0.0,
        species: int | str | None = None,
    ) -> None:
        if not (np.isfinite(q_max) and q_max > 0):
            raise ValueError(f"q_max must be a finite value > 0 nm^-1, got {q_max}")
        if not 0.0 <= q_min < q_max:
            raise ValueError(f"q_min must be in [0, q_max={q_max}) nm^-1, got {q_min}")
        self.q_min, self.q_max = float(q_min), float(q_max)
        self.edges, self.x = uniform_bins(self.q_min, self.q_max, n_bins)
        self.species = species
        self.name = "S(q)" if species is None else f"S(q) {species}-{species}"

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        run = runs[0]
        self._index = np.flatnonzero(run.species_mask(self.species, "species"))
        self._lengths = np.zeros(3)
        self._n_k: list[int] = []

    def _build_k_vectors(self, lengths: np.ndarray) -> None:
        """Integer k-vector components and their shells for a box of edges ``lengths`` (nm).

        The sum runs over the block nx in [0, n_x], ny in [-n_y, n_y], nz in [-n_z, n_z]
        (n = floor(q_max L / 2 pi)) as one matrix product; ``_take`` picks its half-space
        entries with ``q_min <= |k| < q_max``.
        """
        n_max = np.floor(self.q_max * lengths / (2.0 * np.pi)).astype(np.int64)
        self._nx = np.arange(n_max[0] + 1)
        self._ny = np.arange(-n_max[1], n_max[1] + 1)
        self._nz = np.arange(-n_max[2], n_max[2] + 1)
        nx, ny, nz = np.meshgrid(self._nx, self._ny, self._nz, indexing="ij")
        unit = 2.0 * np.pi / lengths  # nm^-1 per integer step along x, y, z
        q = np.sqrt((unit[0] * nx) ** 2 + (unit[1] * ny) ** 2 + (unit[2] * nz) ** 2)
        upper = (nx > 0) | (ny > 0) | ((ny == 0) & (nz > 0))
        keep = (upper & (q >= self.q_min) & (q < self.q_max)).ravel()
        if not keep.any():
            raise ValueError(
                f"box {np.round(lengths, 4).tolist()} nm has no reciprocal-lattice vector with "
                f"{self.q_min} <= |k| < {self.q_max} nm^-1; raise q_max above "
                f"{2.0 * np.pi / lengths.max():.4g} or lower q_min"
            )
        self._take = np.flatnonzero(keep)
        self._shell = np.searchsorted(self.edges, q.ravel()[self._take], side="right") - 1
        self._k_counts = np.bincount(self._shell, minlength=len(self.x))
        self._block = max(1, BLOCK_ELEMENTS // (len(self._ny) * len(self._nz)))
        self._lengths = lengths

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        lengths = orthorhombic_lengths("S(q)", frame.box)
        if not np.array_equal(lengths, self._lengths):
            self._build_k_vectors(lengths)
        fractional = frame.positions[self._index] / lengths
        fractional -= np.floor(fractional)  # exp(i k.r) is periodic; keeps phases small
        rho = np.zeros((len(self._nx), len(self._ny) * len(self._nz)), dtype=np.complex128)
        for start in range(0, len(fractional), self._block):
            s = fractional[start : start + self._block] * (2j * np.pi)
            ex = np.exp(s[:, 0:1] * self._nx)  # [beads, nx]: per-axis factors of exp(i k.r)
            ey = np.exp(s[:, 1:2] * self._ny)
            ez = np.exp(s[:, 2:3] * self._nz)
            rho += ex.T @ (ey[:, :, None] * ez[:, None, :]).reshape(len(s), -1)
        taken = rho.ravel()[self._take]
        power = (taken.real**2 + taken.imag**2) / len(self._index)
        sums = np.bincount(self._shell, weights=power, minlength=len(self.x))
        means = np.full(len(self.x), np.nan)
        np.divide(sums, self._k_counts, out=means, where=self._k_counts > 0)
        self._n_k.append(len(self._take))
        return means, 1.0

    def _conclude(self, n_blocks: int) -> ObservableResult:
        values = np.stack(self._values)
        runs = np.asarray(self._runs)
        y, yerr = np.full(len(self.x), np.nan), np.full(len(self.x), np.nan)
        for b in range(len(self.x)):
            seen = np.isfinite(values[:, b])
            if seen.any():
                groups = runs[seen] if self._runs[-1] > 0 else None
                mean, error = block_average(
                    values[seen, b : b + 1], np.ones(seen.sum()), n_blocks, groups
                )
                y[b], yerr[b] = mean[0], error[0]
        return self._result(y, yerr)

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        result = super()._result(y, yerr)
        result.attrs["n_beads"] = len(self._index)
        result.attrs["n_k"] = float(np.mean(self._n_k))
        return result
