"""Radial distribution functions g(r), per species pair, their onset, first minimum and
coordination numbers."""

from __future__ import annotations

import numpy as np

from cgkd.geometry import radial_histogram
from cgkd.geometry import species_pairs as present_species_pairs
from cgkd.observables.base import (
    HistogramObservable,
    NotComputableError,
    ObservableResult,
    check_within_half_box,
    uniform_bins,
)
from cgkd.observables.trajectory import Frame, Trajectory


class RDF(HistogramObservable):
    """g(r) on ``n_bins`` uniform bins over [0, ``r_max``] nm, averaged over frames.

    ``pair=(a, b)`` (species names or indices) restricts it to beads of species a around beads
    of species b; by default all beads. Each frame is normalised by its own density and the
    ideal-gas shell volumes; same-species pairs count once against N(N-1)/2 pairs.
    The result's ``attrs["density"]`` is the mean density (nm^-3) of b-beads seen from an
    a-bead (N_b - 1 over V for a = b), which :func:`coordination_number` needs, and
    ``attrs["same_species"]`` whether both ends are of one species (or all beads).
    """

    x_label = "r (nm)"
    y_label = "g(r)"

    def __init__(
        self, r_max: float, n_bins: int, pair: tuple[int | str, int | str] | None = None
    ) -> None:
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        self.r_max = float(r_max)
        self.edges, self.x = uniform_bins(0.0, self.r_max, n_bins)
        self.pair = pair
        self.name = "rdf" if pair is None else f"rdf {pair[0]}-{pair[1]}"

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        run = runs[0]
        if self.pair is None:
            self._index_a = self._index_b = np.arange(run.n_beads)
            self._same = True
        else:
            a, b = (run.species_index(s) for s in self.pair)
            self._index_a = np.flatnonzero(run.types == a)
            self._index_b = np.flatnonzero(run.types == b)
            self._same = a == b
        minimum = 2 if self._same else 1
        if min(len(self._index_a), len(self._index_b)) < minimum:
            raise NotComputableError(
                f"{run.name}: pair={self.pair} selects {len(self._index_a)} and "
                f"{len(self._index_b)} beads; need >= {minimum} of each, check the species"
            )
        self._densities: list[float] = []

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        check_within_half_box("r_max", self.r_max, frame.box)
        g, density = radial_histogram(
            frame.positions, frame.box, self._index_a, self._index_b, self.edges
        )
        self._densities.append(density)
        return g, 1.0

    def _result(self, y: np.ndarray, yerr: np.ndarray) -> ObservableResult:
        result = super()._result(y, yerr)
        result.attrs["density"] = float(np.mean(self._densities))
        result.attrs["same_species"] = bool(self._same)
        return result


def species_pairs(trajectory: Trajectory) -> list[tuple[str, str]]:
    """Every unordered pair of the trajectory's species present, (a, b) with a <= b by index."""
    return present_species_pairs(trajectory.types, trajectory.type_names)


def coordination_number(rdf: ObservableResult) -> ObservableResult:
    """Running coordination number n(r) = density * integral of g(s) 4 pi s^2 ds up to r.

    ``x`` are the upper bin edges (nm); n(r) is the mean number of b-beads within r of an
    a-bead. Errors add the bins' errors in quadrature (bins treated as independent). The name
    is the RDF's with ``n(r)`` for ``rdf`` (``n(r) A-B``).
    """
    if "density" not in rdf.attrs or rdf.is_2d:
        raise ValueError(f"{rdf.name!r} is not an RDF result with attrs['density']; compute an RDF")
    width = rdf.x[1] - rdf.x[0] if len(rdf.x) > 1 else 2.0 * rdf.x[0]
    upper = rdf.x + 0.5 * width
    shells = 4.0 / 3.0 * np.pi * (upper**3 - (upper - width) ** 3)
    density = rdf.attrs["density"]
    n = density * np.cumsum(rdf.y * shells)
    error = density * np.sqrt(np.cumsum((rdf.yerr * shells) ** 2))
    name = rdf.name.replace("rdf", "n(r)", 1)
    return ObservableResult(name, upper, n, error, "r (nm)", "n(r)", attrs=dict(rdf.attrs))


def rdf_onset(result: ObservableResult, threshold: float = 0.01) -> float:
    """First bin centre r (nm) at which g(r) exceeds ``threshold``."""
    above = np.flatnonzero(result.y > threshold)
    if len(above) == 0:
        raise ValueError(
            f"g(r) never exceeds threshold={threshold} (max {result.y.max():.3g}); lower it"
        )
    return float(result.x[above[0]])


def first_minimum(result: ObservableResult, rise: float = 0.02) -> float:
    """r (nm) of the first minimum of g(r) after its first peak: the end of the first shell.

    g is smoothed over 3 bins and followed outwards. The first peak is the first maximum above
    1 after which g falls by more than ``rise`` plus twice its error at the maximum; the
    minimum is the lowest point after it before g climbs again by more than ``rise`` plus twice
    its error there (noise smaller than that does not end either search). A flat bottom (g = 0
    between well separated shells) gives its middle; otherwise a parabola through the five bins
    around the lowest one places the minimum within that bin's neighbours. NotComputableError
    when g has no such peak and minimum below r_max (a gas, or r_max inside the first shell).
    """
    g, r = result.y, result.x
    if result.is_2d or len(g) < 3:
        raise ValueError(f"{result.name!r} is not an RDF with >= 3 bins; compute an RDF")
    width = r[1] - r[0]
    smooth = np.convolve(np.pad(g, 1, mode="edge"), np.ones(3) / 3.0, mode="valid")
    margin = rise + 2.0 * result.yerr
    highest, peak, lowest = 0, None, 0
    for k in range(len(g)):
        if peak is None:
            if smooth[k] > smooth[highest]:
                highest = k
            elif smooth[highest] > 1.0 and smooth[k] < smooth[highest] - margin[highest]:
                peak, lowest = highest, k
        elif smooth[k] < smooth[lowest]:
            lowest = k
        elif smooth[k] > smooth[lowest] + margin[lowest]:
            break
    else:
        r_max = r[-1] + 0.5 * width
        if peak is None:
            raise NotComputableError(
                f"{result.name}: g(r) has no peak above 1 that falls off again up to "
                f"r_max={r_max:.3g} nm, so no first shell; raise r_max"
            )
        raise NotComputableError(
            f"{result.name}: g(r) does not rise again after its first peak at {r[peak]:.3g} nm "
            f"up to r_max={r_max:.3g} nm, so it has no first minimum; raise r_max"
        )
    flat = lowest
    while flat + 1 < len(g) and smooth[flat + 1] <= smooth[lowest] + 1e-12:
        flat += 1
    if flat > lowest:
        return float(0.5 * (r[lowest] + r[flat]))
    window = slice(max(lowest - 2, 0), lowest + 3)
    curvature, slope, _ = np.polyfit(r[window], g[window], 2)
    if curvature <= 0:
        return float(r[lowest])
    return float(np.clip(-slope / (2.0 * curvature), r[lowest] - width, r[lowest] + width))
