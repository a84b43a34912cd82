"""Periodic geometry in one place: box shape, minimum images, wrapping and whole molecules,
pair searches, pair distances and their histograms, for orthorhombic and triclinic boxes
(OpenMM's reduced form: box vectors as rows, a along x, b in the xy plane). Lengths in nm.

numpy for the analysis (:mod:`~cgkd.geometry.periodic`, :mod:`~cgkd.geometry.pairs`), torch
where models and the MD engine need it (:func:`minimum_image_batch`, the cell list
:func:`pair_search`).
"""

from cgkd.geometry.cells import cell_counts, closest_distance, pair_search, perpendicular_widths
from cgkd.geometry.pairs import (
    check_cutoff,
    cross_distances,
    distance_histogram,
    nearest_neighbours,
    pair_vectors,
    radial_histogram,
    species_pairs,
)
from cgkd.geometry.periodic import (
    TRICLINIC_TOLERANCE,
    TriclinicBoxError,
    box_lengths,
    box_volume,
    box_widths,
    is_orthorhombic,
    make_whole,
    minimum_image,
    minimum_image_batch,
    wrap,
    wrap_orthorhombic,
)

__all__ = [
    "TRICLINIC_TOLERANCE",
    "TriclinicBoxError",
    "box_lengths",
    "box_volume",
    "box_widths",
    "cell_counts",
    "check_cutoff",
    "closest_distance",
    "cross_distances",
    "distance_histogram",
    "is_orthorhombic",
    "make_whole",
    "minimum_image",
    "minimum_image_batch",
    "nearest_neighbours",
    "pair_search",
    "pair_vectors",
    "perpendicular_widths",
    "radial_histogram",
    "species_pairs",
    "wrap",
    "wrap_orthorhombic",
]
