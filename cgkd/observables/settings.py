"""The ``analysis`` config section: which observables :func:`cgkd.observables.suite.evaluate`
computes, the same way on the AA-mapped reference and on every CG run, and their settings.
Distances in nm, angles in degrees, times in ps; a section's ``enabled: false`` skips it.

A setting that may be ``auto`` (typed ``Any``: a number or ``"auto"``) follows the system:
r1 is the first minimum of the reference's total g(r) (all beads; the end of the first
coordination shell, e.g. about 0.37 nm for TIP3P water beads, 1.5 sigma for a Lennard-Jones
liquid), and the CG runs are measured with the reference's values. A number always wins. The
values used are in metrics.json/result.json ("analysis") and the report. An observable the
data cannot give (too few frames, no neighbours within a cutoff, a distance beyond half the
box, no r1) is skipped with the reason and the setting to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RDFSettings:
    """Radial distribution functions up to ``r_max`` (nm; below half the box, and past r1
    for ``auto``) in ``n_bins`` bins; with ``species``, one per species pair too when there is
    more than one species."""

    r_max: float = 0.95
    n_bins: int = 95
    species: bool = True


@dataclass
class StructureFactorSettings:
    """S(q) from the total RDF (Lorch window), at ``n_q`` wave numbers up to ``q_max``
    (nm^-1)."""

    enabled: bool = True
    q_max: float = 40.0
    n_q: int = 160


@dataclass
class ADFSettings:
    """Angles between first-shell neighbours within ``cutoff`` (nm; auto: r1)."""

    cutoff: Any = "auto"
    n_bins: int = 60


@dataclass
class CDFSettings:
    """Combined distance / angle distribution of first-shell neighbours, from ``r_min``
    (nm; auto: where the reference g(r) exceeds 0.01) to ``r_max`` (nm; auto: r1)."""

    enabled: bool = True
    r_min: Any = "auto"
    r_max: Any = "auto"
    n_r_bins: int = 22
    n_angle_bins: int = 36


@dataclass
class TetrahedralSettings:
    """Errington-Debenedetti q of the 4 nearest neighbours (water-like). ``enabled: auto``:
    on for one bead species with at most 9 beads within r1 on average (water models about
    4-8; simple liquids 10-13)."""

    enabled: Any = "auto"
    n_bins: int = 50


@dataclass
class SteinhardtSettings:
    """Bond-orientational order q_l, for each degree in ``l``, of the neighbours within
    ``cutoff`` (nm; auto: r1)."""

    enabled: bool = True
    l: list[int] = field(default_factory=lambda: [4, 6])  # noqa: E741
    cutoff: Any = "auto"
    n_bins: int = 50


@dataclass
class CoordinationSettings:
    """Distribution of the number of neighbours within ``cutoff`` (nm; auto: r1); the last
    bin ``max_count`` holds larger counts too (auto: twice the mean, rounded up: 2 x bead
    density x sphere volume)."""

    enabled: bool = True
    cutoff: Any = "auto"
    max_count: Any = "auto"


@dataclass
class LocalDensitySettings:
    """Number density of the other beads within ``radius`` (nm; auto: 1.5 r1) of each bead,
    binned at the densities of 0 .. ``max_count`` beads in the sphere (auto: as for
    coordination)."""

    enabled: bool = True
    radius: Any = "auto"
    max_count: Any = "auto"


@dataclass
class BondSettings:
    """Bond-length distributions of the CG bonds of multi-bead molecules (none for one-bead
    molecules): over every bond and over each bonded species pair, in ``n_bins`` bins up to
    ``r_max`` (nm; longer bonds count in the last bin)."""

    enabled: bool = True
    r_max: float = 0.6
    n_bins: int = 120


@dataclass
class MSDSettings:
    """MSD and diffusion coefficient (and the VACF where velocities exist) up to ``max_lag``
    (ps; None: half a block, i.e. run / (2 n_blocks) for one run). The linear fit
    MSD = 6 D t + c runs from ``fit_start`` (ps; None: the first lag at or after 20 % of the
    longest lag, never lag 0) to ``fit_stop`` (None: the last lag at or before 80 %, at least
    the lag after the start)."""

    enabled: bool = True
    max_lag: float | None = None
    fit_start: float | None = None
    fit_stop: float | None = None


@dataclass
class AnalysisSettings:
    """The ``analysis`` section (see the module docstring). ``n_blocks``: error bars from
    contiguous blocks of one run (replicas are used when > 1); ``reference_stride``: every
    k-th frame of the AA-mapped reference; ``timing_repeats``: force evaluations timed per
    model."""

    n_blocks: int = 5
    reference_stride: int = 1
    rdf: RDFSettings = field(default_factory=RDFSettings)
    structure_factor: StructureFactorSettings = field(default_factory=StructureFactorSettings)
    adf: ADFSettings = field(default_factory=ADFSettings)
    cdf: CDFSettings = field(default_factory=CDFSettings)
    tetrahedral: TetrahedralSettings = field(default_factory=TetrahedralSettings)
    steinhardt: SteinhardtSettings = field(default_factory=SteinhardtSettings)
    coordination: CoordinationSettings = field(default_factory=CoordinationSettings)
    local_density: LocalDensitySettings = field(default_factory=LocalDensitySettings)
    bonds: BondSettings = field(default_factory=BondSettings)
    msd: MSDSettings = field(default_factory=MSDSettings)
    timing_repeats: int = 30
