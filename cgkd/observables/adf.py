"""Three-body angular distribution function: angles j-i-k between neighbours of each bead."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from cgkd.observables.base import Observable, ObservableResult
from cgkd.observables.box import box_lengths, check_within_half_box, minimum_image, wrap


class ADF(Observable):
    """Probability density (1/deg) of angles j-i-k in [0, 180] deg, j and k within ``cutoff`` of i.

    ``cutoff`` is in nm. Every bead i is a centre and every unordered pair of its neighbours
    counts once; the frames are pooled, so the density integrates to 1 over degrees.
    """

    name = "adf"
    x_label = "θ (deg)"
    y_label = "P(θ) (1/deg)"

    def __init__(self, cutoff: float, n_bins: int = 90) -> None:
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 nm, got {cutoff}")
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.cutoff = float(cutoff)
        self.edges = np.linspace(0.0, 180.0, n_bins + 1)
        self.x = 0.5 * (self.edges[:-1] + self.edges[1:])

    def _prepare(self, positions: np.ndarray, boxes: np.ndarray) -> None:
        check_within_half_box("cutoff", self.cutoff, boxes)

    def _single_frame(self, positions: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        lengths = box_lengths(box)
        wrapped = wrap(positions, lengths)
        pairs = cKDTree(wrapped, boxsize=lengths).query_pairs(self.cutoff, output_type="ndarray")
        # Directed bonds centre -> neighbour, both ways, grouped by centre.
        centre = np.concatenate([pairs[:, 0], pairs[:, 1]])
        neighbour = np.concatenate([pairs[:, 1], pairs[:, 0]])
        order = np.argsort(centre, kind="stable")
        centre, neighbour = centre[order], neighbour[order]
        bonds = minimum_image(wrapped[neighbour] - wrapped[centre], lengths)
        first, second = _pairs_within_groups(centre)
        u, v = bonds[first], bonds[second]
        angles = np.degrees(
            np.arctan2(np.linalg.norm(np.cross(u, v), axis=1), np.einsum("ij,ij->i", u, v))
        )
        counts, _ = np.histogram(angles, bins=self.edges)
        return counts / np.diff(self.edges), float(len(angles))

    def _conclude(self, values: np.ndarray, weights: np.ndarray, n_blocks: int) -> ObservableResult:
        if weights.sum() == 0:
            raise ValueError(
                f"no bead has two neighbours within cutoff={self.cutoff} nm; increase cutoff"
            )
        return super()._conclude(values, weights, n_blocks)


def _pairs_within_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (p, q), p < q, of all elements sharing a label in sorted ``labels``."""
    group_end = np.searchsorted(labels, labels, side="right")
    partners = group_end - np.arange(len(labels)) - 1
    first = np.repeat(np.arange(len(labels)), partners)
    run_start = np.repeat(np.cumsum(partners) - partners, partners)
    second = first + 1 + np.arange(len(first)) - run_start
    return first, second
