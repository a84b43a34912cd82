"""Dynamics: mean squared displacement (MSD), velocity autocorrelation (VACF) and diffusion.

Both average over every time origin of a run with FFT correlations (O(T log T) per bead
coordinate), so the selected frames of a run must be equally spaced in time. Each run's
selected values are kept in memory as [T, N, 3] float64 (1000 frames of 1000 beads: 24 MB).
Error bars are standard errors over blocks: ``n_blocks`` contiguous time blocks of one run, or
the independent runs when there are several (each run one block). Lags go up to ``max_lag``,
which must fit in the shortest block.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy.integrate import trapezoid

from cgkd.geometry import minimum_image
from cgkd.observables.base import NotComputableError, Observable, ObservableResult
from cgkd.observables.trajectory import Frame, Trajectory, uniform_spacing

#: Complex values held at once by one FFT over a chunk of bead coordinates (64 MiB).
_FFT_CHUNK_VALUES: int = 1 << 22


class _LagObservable(Observable):
    """Mean over beads and time origins of a correlation of a per-frame [N, 3] quantity.

    Subclasses give each frame's values (``_values``) and, for a [T, N, 3] series, the sum
    over origins and beads of the correlation at every lag 0..T-1 (``_lag_sums``). This class
    checks the frame spacing, keeps the series of each run (``_series[:_filled]`` holds the
    values of the current run's earlier frames) and forms the block means.
    """

    x_label = "t (ps)"

    def __init__(self, species: int | str | None, max_lag: float | None) -> None:
        if max_lag is not None and not max_lag > 0:
            raise ValueError(f"max_lag must be > 0 ps, got {max_lag}")
        self.species = species
        self.max_lag = None if max_lag is None else float(max_lag)

    @abstractmethod
    def _values(self, frame: Frame) -> np.ndarray:
        """The [N, 3] values of the selected beads in ``frame``."""

    @abstractmethod
    def _lag_sums(self, series: np.ndarray) -> np.ndarray:
        """[T] sums over origins and beads of the correlation of [T, N, 3] ``series`` at lags."""

    def _prepare(self, runs: list[Trajectory]) -> None:
        run = runs[0]
        self._index = np.flatnonzero(run.species_mask(self.species, "species"))
        self._n_runs = len(runs)
        self._n_frames = 0
        self._dt: float | None = None
        self._run_sums: list[np.ndarray] = []

    def _begin_run(self, run: Trajectory, index: int, frames: np.ndarray) -> None:
        dt = _frame_spacing(run, frames, self.name)
        if self._dt is not None and not np.isclose(dt, self._dt, rtol=1e-6, atol=0.0):
            raise NotComputableError(
                f"{run.name}: selected frames are {dt:.6g} ps apart but the first run's are "
                f"{self._dt:.6g} ps apart; choose step so that every run has one spacing"
            )
        self._dt = dt
        self._series = np.empty((len(frames), len(self._index), 3))
        self._filled = 0
        self._n_frames += len(frames)

    def _single_frame(self, frame: Frame) -> None:
        self._series[self._filled] = self._values(frame)
        self._filled += 1
        if self._filled == len(self._series) and self._n_runs > 1:
            # Each independent run is one block: keep its lag sums and free its frames.
            self._run_sums.append(self._lag_sums(self._series))
            del self._series

    def _block_means(self, n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lags [L] (ps), the mean over all origins [L] and the mean of each block [B, L]."""
        if self._n_runs == 1:
            pieces = np.array_split(self._series, n_blocks)
            n_lags = self._n_lags(min(len(p) for p in pieces), n_blocks)
            whole = [self._lag_sums(self._series)]
            blocks = whole if n_blocks == 1 else [self._lag_sums(p) for p in pieces]
        else:
            n_lags = self._n_lags(min(len(s) for s in self._run_sums), n_blocks)
            whole = blocks = self._run_sums

        def mean(sums: list[np.ndarray]) -> np.ndarray:
            total = np.sum([s[:n_lags] for s in sums], axis=0)
            origins = np.sum([len(s) - np.arange(n_lags) for s in sums], axis=0)
            return total / (origins * len(self._index))

        lags = self._dt * np.arange(n_lags)
        return lags, mean(whole), np.array([mean([s]) for s in blocks])

    def _n_lags(self, shortest: int, n_blocks: int) -> int:
        """Number of lags 0..max_lag (frames) for blocks of at least ``shortest`` frames."""
        blocks = f"n_blocks={n_blocks} blocks of the run" if self._n_runs == 1 else "the runs"
        minimum = 3 if self.max_lag is None else 2
        if shortest < minimum:
            raise NotComputableError(
                f"{self.name}: the shortest of {blocks} has {shortest} frames, need >= {minimum}; "
                "lower n_blocks or select more frames"
            )
        if self.max_lag is None:
            return (shortest - 1) // 2 + 1
        last = int(np.floor(self.max_lag / self._dt + 1e-6))
        if last < 1:
            raise NotComputableError(
                f"{self.name}: max_lag={self.max_lag} ps is shorter than the frame spacing "
                f"{self._dt:.6g} ps; raise max_lag"
            )
        if last > shortest - 1:
            raise NotComputableError(
                f"{self.name}: max_lag={self.max_lag} ps needs blocks of {last + 1} frames but the "
                f"shortest of {blocks} has {shortest}; use max_lag <= "
                f"{(shortest - 1) * self._dt:.6g} ps, fewer n_blocks or longer runs"
            )
        return last + 1

    def _attrs(self, lags: np.ndarray, n_blocks: int) -> dict[str, float | int]:
        """The result's scalars shared by MSD and VACF (dt and max_lag in ps)."""
        return {
            "dt": self._dt,
            "max_lag": float(lags[-1]),
            "n_frames": self._n_frames,
            "n_runs": self._n_runs,
            "n_blocks": self._n_runs if self._n_runs > 1 else n_blocks,
            "n_beads": len(self._index),
        }


class MSD(_LagObservable):
    """Mean squared displacement (nm^2) against lag time (ps), over beads and all time origins.

    Args:
        species: only beads of this species (name or index); all beads when None.
        max_lag: longest lag, ps; default half the shortest block (run, or run / n_blocks).
        fit_start, fit_stop: lag range (ps) of the linear fit MSD = 6 D t + c for
            ``attrs["D"]`` (nm^2/ps); default 20% and 80% of the longest lag.

    Positions may be wrapped into the box: each run is unwrapped by adding up minimum-image
    displacements between consecutive frames, which assumes no bead moves half a box edge or
    more between frames (orthorhombic boxes). ``attrs["D_err"]`` is the standard error of D
    fitted in each block (zero with one block).
    """

    y_label = "MSD (nm^2)"

    def __init__(
        self,
        species: int | str | None = None,
        max_lag: float | None = None,
        fit_start: float | None = None,
        fit_stop: float | None = None,
    ) -> None:
        super().__init__(species, max_lag)
        if fit_start is not None and not fit_start >= 0:
            raise ValueError(f"fit_start must be >= 0 ps, got {fit_start}")
        if fit_stop is not None and not fit_stop > (fit_start or 0.0):
            raise ValueError(
                f"fit_stop={fit_stop} ps must be > fit_start={fit_start or 0.0} ps; raise fit_stop"
            )
        self.fit_start, self.fit_stop = fit_start, fit_stop
        self.name = "msd" if species is None else f"msd {species}"

    def _begin_run(self, run: Trajectory, index: int, frames: np.ndarray) -> None:
        super()._begin_run(run, index, frames)
        self._wrapped: np.ndarray | None = None

    def _values(self, frame: Frame) -> np.ndarray:
        wrapped = frame.positions[self._index]
        if self._wrapped is None:
            unwrapped = wrapped
        else:
            step = minimum_image(wrapped - self._wrapped, frame.box)
            unwrapped = self._series[self._filled - 1] + step
        self._wrapped = wrapped
        return unwrapped

    def _lag_sums(self, series: np.ndarray) -> np.ndarray:
        return _squared_displacement_sums(series)

    def _conclude(self, n_blocks: int) -> ObservableResult:
        lags, msd, blocks = self._block_means(n_blocks)
        fit = self._fit_lags(lags)
        fit_start, fit_stop = lags[fit][0], lags[fit][-1]
        # polyfit fits each column: the slope of MSD against t is 6 D.
        slopes = np.polyfit(lags[fit], np.column_stack([msd, *blocks])[fit], 1)[0] / 6.0
        attrs = self._attrs(lags, n_blocks)
        attrs.update(
            D=float(slopes[0]),
            D_err=float(_standard_error(slopes[1:])),
            fit_start=float(fit_start),
            fit_stop=float(fit_stop),
        )
        return ObservableResult(
            self.name, lags, msd, _standard_error(blocks), self.x_label, self.y_label, attrs=attrs
        )

    def _fit_lags(self, lags: np.ndarray) -> np.ndarray:
        """[L] bool: the lags (ps) of the diffusion fit, at least two.

        Unset ends follow the lags available: the start is the first lag at or after 20 % of
        the longest (never lag 0), the stop the last lag at or before 80 %, moved out to the
        lag after the start where that holds fewer than two lags. NotComputableError when the lags
        cannot hold the range.
        """
        longest, last = lags[-1], len(lags) - 1
        if self.fit_stop is not None and self.fit_stop > longest * (1.0 + 1e-9):
            raise NotComputableError(
                f"{self.name}: fit_stop={self.fit_stop} ps is beyond the longest lag "
                f"{longest:.6g} ps; lower fit_stop or raise max_lag"
            )
        if self.fit_start is not None and self.fit_start >= longest * (1.0 - 1e-9):
            raise NotComputableError(
                f"{self.name}: fit_start={self.fit_start} ps is not below the longest lag "
                f"{longest:.6g} ps; lower fit_start or raise max_lag"
            )
        if self.fit_start is None:
            first = max(1, int(np.ceil(0.2 * last - 1e-9)))
        else:
            first = int(np.ceil(self.fit_start / self._dt - 1e-6))
        if self.fit_stop is None:
            final = min(max(int(np.floor(0.8 * last + 1e-9)), first + 1), last)
        else:
            final = int(np.floor(self.fit_stop / self._dt + 1e-6))
        if final - first < 1:
            start = first * self._dt if self.fit_start is None else self.fit_start
            stop = final * self._dt if self.fit_stop is None else self.fit_stop
            raise NotComputableError(
                f"{self.name}: fit range {start:.6g}..{stop:.6g} ps holds "
                f"{max(final - first + 1, 0)} lags (lags up to {longest:.6g} ps, frames "
                f"{self._dt:.6g} ps apart), need >= 2; widen fit_start..fit_stop, raise max_lag, "
                "lower n_blocks or use longer runs"
            )
        index = np.arange(len(lags))
        return (index >= first) & (index <= final)


class VACF(_LagObservable):
    """Normalised velocity autocorrelation C(t)/C(0), C(t) = <v(0).v(t)>, against lag t (ps).

    Args:
        species: only beads of this species (name or index); all beads when None.
        max_lag: longest lag, ps; default half the shortest block (run, or run / n_blocks).

    ``attrs``: ``C0`` = <v.v> (nm^2/ps^2) and ``D_green_kubo`` = (1/3) integral of C(t) dt up
    to ``max_lag`` (nm^2/ps, trapezoid rule; choose max_lag where C(t) has decayed), with
    ``C0_err`` and ``D_green_kubo_err`` the standard errors over blocks (zero with one block).
    """

    y_label = "C(t)/C(0)"

    def __init__(self, species: int | str | None = None, max_lag: float | None = None) -> None:
        super().__init__(species, max_lag)
        self.name = "vacf" if species is None else f"vacf {species}"

    def _prepare(self, runs: list[Trajectory]) -> None:
        for run in runs:
            if not run.has_velocities:
                raise NotComputableError(
                    f"{run.name}: no velocities; VACF needs a trajectory made with velocities="
                )
        super()._prepare(runs)

    def _values(self, frame: Frame) -> np.ndarray:
        return frame.velocities[self._index]

    def _lag_sums(self, series: np.ndarray) -> np.ndarray:
        return _autocorrelation_sums(series)

    def _conclude(self, n_blocks: int) -> ObservableResult:
        lags, c, blocks = self._block_means(n_blocks)
        if not (c[0] > 0 and np.all(blocks[:, 0] > 0)):
            raise NotComputableError(f"{self.name}: velocities are all zero in a block; C(0) = 0")
        integrals = trapezoid(np.vstack([c, blocks]), lags, axis=1) / 3.0
        attrs = self._attrs(lags, n_blocks)
        attrs.update(
            C0=float(c[0]),
            C0_err=float(_standard_error(blocks[:, 0])),
            D_green_kubo=float(integrals[0]),
            D_green_kubo_err=float(_standard_error(integrals[1:])),
        )
        normalised = blocks / blocks[:, :1]
        return ObservableResult(
            self.name,
            lags,
            c / c[0],
            _standard_error(normalised),
            self.x_label,
            self.y_label,
            attrs=attrs,
        )


def shared_max_lag(sources: Sequence[Sequence[float]], n_blocks: int) -> float:
    """The longest MSD lag (ps) that every source allows by default, so that D is fitted on
    one lag window for all of them: each source is the durations (ps) of its runs, and
    allows half a block (half of one run split into ``n_blocks``, or half its shortest run
    when it has several, each one block). Comparing D over the same window matters when the
    MSD is not yet linear there (a viscous liquid, a short run)."""
    allowed = [
        0.5 * (min(runs) if len(runs) > 1 else runs[0] / n_blocks) for runs in sources if runs
    ]
    if not allowed:
        raise ValueError("no runs to take a lag window from")
    return float(min(allowed))


def diffusion_ratio(cg: ObservableResult, reference: ObservableResult) -> tuple[float, float]:
    """D_CG / D_ref and its standard error (independent errors combined in quadrature).

    Each result is an :class:`MSD` (``attrs["D"]``) or :class:`VACF` (``attrs["D_green_kubo"]``)
    result.
    """
    (d_cg, err_cg), (d_ref, err_ref) = _diffusion(cg), _diffusion(reference)
    if d_ref == 0:
        raise ValueError(f"{reference.name!r}: reference D is 0 nm^2/ps; the ratio is undefined")
    ratio = d_cg / d_ref
    return ratio, float(np.hypot(err_cg, ratio * err_ref) / abs(d_ref))


def _diffusion(result: ObservableResult) -> tuple[float, float]:
    """(D, D_err) in nm^2/ps from an MSD or VACF result."""
    for key in ("D", "D_green_kubo"):
        if key in result.attrs:
            return float(result.attrs[key]), float(result.attrs.get(f"{key}_err", 0.0))
    raise ValueError(
        f"{result.name!r} has no attrs['D'] or attrs['D_green_kubo']; pass an MSD or VACF result"
    )


def _frame_spacing(run: Trajectory, frames: np.ndarray, name: str) -> float:
    """Time (ps) between the selected ``frames``; NotComputableError if unknown or uneven."""
    if run.times is None:
        raise NotComputableError(
            f"{run.name}: no frame times for {name}; give the trajectory dt= (ps between frames)"
        )
    if len(frames) < 2:
        raise NotComputableError(
            f"{run.name}: {name} needs >= 2 selected frames, got {len(frames)}"
        )
    spacing = uniform_spacing(run.times[frames])
    if spacing is None:
        steps = np.diff(run.times[frames])
        raise NotComputableError(
            f"{run.name}: selected frames are not equally spaced in time (steps "
            f"{steps.min():.6g}..{steps.max():.6g} ps); select evenly spaced frames for {name}"
        )
    return spacing


def _standard_error(values: np.ndarray) -> np.ndarray:
    """Standard error of the mean over axis 0 (the blocks); zero for one block."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return np.zeros(values.shape[1:])
    return values.std(axis=0, ddof=1) / np.sqrt(len(values))


def _autocorrelation_sums(series: np.ndarray) -> np.ndarray:
    """sum_k sum_i x_i(k) x_i(k + m) over origins k for every lag m of a [T, ...] series (FFT)."""
    n_frames = len(series)
    columns = series.reshape(n_frames, -1)
    # Zero padding to >= 2T - 1 makes the FFT correlation linear rather than circular.
    n_fft = scipy.fft.next_fast_len(2 * n_frames - 1, real=True)
    width = max(1, _FFT_CHUNK_VALUES // n_fft)
    power = np.zeros(n_fft // 2 + 1)
    for start in range(0, columns.shape[1], width):
        spectrum = scipy.fft.rfft(columns[:, start : start + width], n=n_fft, axis=0, workers=-1)
        power += (spectrum.real**2 + spectrum.imag**2).sum(axis=1)
    return scipy.fft.irfft(power, n=n_fft)[:n_frames]


def _squared_displacement_sums(positions: np.ndarray) -> np.ndarray:
    """sum_k sum_i |r_i(k + m) - r_i(k)|^2 over origins k for every lag m of [T, N, 3] (FFT).

    |r(k+m) - r(k)|^2 = |r(k)|^2 + |r(k+m)|^2 - 2 r(k).r(k+m): the squares by cumulative sums,
    the products by the FFT autocorrelation.
    """
    n_frames = len(positions)
    # The MSD is unchanged by a shift per bead; centring keeps the cancellation small.
    centred = positions - positions.mean(axis=0)
    squares = np.einsum("tij,tij->t", centred, centred)
    cumulative = np.concatenate(([0.0], np.cumsum(squares)))
    lags = np.arange(n_frames)
    sums = (
        cumulative[n_frames - lags]
        + (cumulative[-1] - cumulative[lags])
        - 2.0 * _autocorrelation_sums(centred)
    )
    sums[0] = 0.0  # exactly; the FFT leaves rounding noise
    return sums
