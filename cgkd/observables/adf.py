"""Three-body structure: angles j-i-k between neighbours of each bead (ADF), and their joint
distribution with the neighbour distance (CDF)."""

from __future__ import annotations

import numpy as np

from cgkd.geometry import pair_vectors
from cgkd.observables.base import (
    HistogramObservable,
    NotComputableError,
    ObservableResult,
    check_within_half_box,
    uniform_bins,
)
from cgkd.observables.trajectory import Frame, Trajectory


class _NeighbourTriplets(HistogramObservable):
    """Histograms over triplets j-i-k of a centre i (species ``centre``, or every bead) and two
    of its neighbours within the shell ``shell_setting`` (the name of the attribute, in nm)."""

    centre: int | str | None
    shell_setting: str

    def _prepare(self, runs: list[Trajectory]) -> None:
        super()._prepare(runs)
        self._centres = runs[0].species_mask(self.centre, "centre")

    def _conclude(self, n_blocks: int) -> ObservableResult:
        if sum(self._weights) == 0:
            name, value = self.shell_setting, getattr(self, self.shell_setting)
            raise NotComputableError(
                f"{self.name}: no bead has two neighbours within {name}={value} nm; increase {name}"
            )
        return super()._conclude(n_blocks)


class ADF(_NeighbourTriplets):
    """Probability density (1/deg) of angles j-i-k in [0, 180] deg, j and k within ``cutoff`` of i.

    ``cutoff`` is in nm. Every bead i is a centre (only beads of species ``centre`` when
    given) and every unordered pair of its neighbours counts once; frames are pooled, so the
    density integrates to 1 over degrees.
    """

    x_label = "θ (deg)"
    y_label = "P(θ) (1/deg)"
    shell_setting = "cutoff"

    def __init__(self, cutoff: float, n_bins: int = 90, centre: int | str | None = None) -> None:
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 nm, got {cutoff}")
        self.cutoff = float(cutoff)
        self.centre = centre
        self.edges, self.x = uniform_bins(0.0, 180.0, n_bins)
        self.name = "adf" if centre is None else f"adf {centre}"

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        _, angles = neighbour_angles(frame, self.cutoff, self._centres)
        counts, _ = np.histogram(angles, bins=self.edges)
        return counts / np.diff(self.edges), float(len(angles))


class CDF(_NeighbourTriplets):
    """Combined distribution of neighbour distance r_ij (nm) and angle j-i-k (deg).

    For every centre i and unordered pair of neighbours j, k within ``r_max`` of i, both
    (r_ij, angle) and (r_ik, angle) are counted. ``y`` [n_r, n_angle] is a probability
    density in 1/(nm deg) over [r_min, r_max] x [0, 180]; ``r_min`` (nm) only trims the empty
    core from the map (pairs closer than it are still counted in the normalisation).
    """

    x_label = "r (nm)"
    x2_label = "θ (deg)"
    y_label = "P(r, θ) (1/(nm deg))"
    shell_setting = "r_max"

    def __init__(
        self,
        r_max: float,
        n_r_bins: int = 30,
        n_angle_bins: int = 45,
        centre: int | str | None = None,
        r_min: float = 0.0,
    ) -> None:
        if not 0 <= r_min < r_max:
            raise ValueError(f"need 0 <= r_min < r_max (nm), got r_min={r_min}, r_max={r_max}")
        if n_r_bins < 1 or n_angle_bins < 1:
            raise ValueError(f"bin counts must be >= 1, got {n_r_bins} and {n_angle_bins}")
        self.r_max = float(r_max)
        self.centre = centre
        self.r_edges = np.linspace(float(r_min), self.r_max, n_r_bins + 1)
        self.angle_edges = np.linspace(0.0, 180.0, n_angle_bins + 1)
        self.x = 0.5 * (self.r_edges[:-1] + self.r_edges[1:])
        self.x2 = 0.5 * (self.angle_edges[:-1] + self.angle_edges[1:])
        self.name = "cdf" if centre is None else f"cdf {centre}"

    def _histogram(self, frame: Frame) -> tuple[np.ndarray, float]:
        distances, angles = neighbour_angles(frame, self.r_max, self._centres)
        counts, _, _ = np.histogram2d(
            distances.ravel(),
            np.concatenate([angles, angles]),
            bins=(self.r_edges, self.angle_edges),
        )
        area = np.outer(np.diff(self.r_edges), np.diff(self.angle_edges))
        return counts / area, float(distances.size)


def neighbour_angles(
    frame: Frame, cutoff: float, centres: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Angles j-i-k (deg) over all centres i and unordered neighbour pairs j, k within
    ``cutoff`` (nm), and the distances [2, M] (nm) r_ij and r_ik of each angle.

    ``centres`` [N] bool restricts the centres i (neighbours are any bead).
    """
    check_within_half_box("cutoff", cutoff, frame.box)
    first, second, vectors = pair_vectors(frame.positions, frame.box, cutoff)
    # Directed bonds centre -> neighbour, both ways, grouped by centre.
    centre = np.concatenate([first, second])
    bonds = np.concatenate([vectors, -vectors])
    if centres is not None:
        keep = centres[centre]
        centre, bonds = centre[keep], bonds[keep]
    order = np.argsort(centre, kind="stable")
    centre, bonds = centre[order], bonds[order]
    first, second = _pairs_within_groups(centre)
    u, v = bonds[first], bonds[second]
    angles = np.degrees(
        np.arctan2(np.linalg.norm(np.cross(u, v), axis=1), np.einsum("ij,ij->i", u, v))
    )
    distances = np.stack([np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)])
    return distances, angles


def _pairs_within_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (p, q), p < q, of all elements sharing a label in sorted ``labels``."""
    group_end = np.searchsorted(labels, labels, side="right")
    partners = group_end - np.arange(len(labels)) - 1
    first = np.repeat(np.arange(len(labels)), partners)
    run_start = np.repeat(np.cumsum(partners) - partners, partners)
    second = first + 1 + np.arange(len(first)) - run_start
    return first, second
