"""Radial distribution function g(r) in periodic orthorhombic boxes, and its onset."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from cgkd.observables.base import Observable, ObservableResult
from cgkd.observables.box import box_lengths, check_within_half_box, minimum_image, wrap


class RDF(Observable):
    """g(r) on ``n_bins`` uniform bins over [0, ``r_max``] nm, averaged over frames.

    With ``types`` [N] (int per bead) and ``pair=(type_a, type_b)`` only those species are used;
    by default all beads. Each frame is normalised by its own density N/V and ideal-gas shell
    volumes; same-species pairs are counted once against N(N-1)/2 pairs.
    """

    x_label = "r (nm)"
    y_label = "g(r)"

    def __init__(
        self,
        r_max: float,
        n_bins: int,
        types: np.ndarray | None = None,
        pair: tuple[int, int] | None = None,
    ) -> None:
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 nm, got {r_max}")
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if (types is None) != (pair is None):
            given = "types" if pair is None else "pair"
            raise ValueError(f"only {given} was given; pass both types and pair, or neither")
        self.r_max = float(r_max)
        self.edges = np.linspace(0.0, self.r_max, n_bins + 1)
        self.x = 0.5 * (self.edges[:-1] + self.edges[1:])
        self.shell_volumes = 4.0 / 3.0 * np.pi * np.diff(self.edges**3)
        self.types = None if types is None else np.asarray(types)
        self.pair = pair
        self.name = "rdf" if pair is None else f"rdf {pair[0]}-{pair[1]}"

    def _prepare(self, positions: np.ndarray, boxes: np.ndarray) -> None:
        check_within_half_box("r_max", self.r_max, boxes)
        n_beads = positions.shape[1]
        if self.types is None or self.pair is None:
            self._index_a = self._index_b = np.arange(n_beads)
        else:
            if self.types.shape != (n_beads,):
                raise ValueError(
                    f"types must have shape [N] = ({n_beads},), got {self.types.shape}"
                )
            self._index_a = np.flatnonzero(self.types == self.pair[0])
            self._index_b = np.flatnonzero(self.types == self.pair[1])
        self._same = self.pair is None or self.pair[0] == self.pair[1]
        minimum = 2 if self._same else 1
        if min(len(self._index_a), len(self._index_b)) < minimum:
            raise ValueError(
                f"pair={self.pair} selects {len(self._index_a)} and {len(self._index_b)} beads; "
                f"need >= {minimum} of each, check types"
            )

    def _single_frame(self, positions: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        lengths = box_lengths(box)
        a = wrap(positions[self._index_a], lengths)
        tree_a = cKDTree(a, boxsize=lengths)
        n_a, n_b = len(self._index_a), len(self._index_b)
        if self._same:
            i, j = tree_a.query_pairs(self.r_max, output_type="ndarray").T
            distances = np.linalg.norm(minimum_image(a[j] - a[i], lengths), axis=1)
            n_pairs = n_a * (n_a - 1) / 2
        else:
            b = wrap(positions[self._index_b], lengths)
            tree_b = cKDTree(b, boxsize=lengths)
            within = tree_a.sparse_distance_matrix(tree_b, self.r_max, output_type="ndarray")
            distances = within["v"]
            n_pairs = n_a * n_b
        counts, _ = np.histogram(distances, bins=self.edges)
        pair_density = n_pairs / np.prod(lengths)
        return counts / (pair_density * self.shell_volumes), 1.0


def rdf_onset(result: ObservableResult, threshold: float = 0.01) -> float:
    """First bin centre r (nm) at which g(r) exceeds ``threshold``."""
    above = np.flatnonzero(result.y > threshold)
    if len(above) == 0:
        raise ValueError(
            f"g(r) never exceeds threshold={threshold} (max {result.y.max():.3g}); lower it"
        )
    return float(result.x[above[0]])
