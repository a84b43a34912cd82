"""Observables of CG and AA-mapped trajectories, their comparison and plots.

Every observable is set up with its parameters and ``run`` on a :class:`Trajectory` (or on
several independent runs); results are :class:`ObservableResult` curves with error bars.
"""

from cgkd.observables.adf import ADF, CDF
from cgkd.observables.base import (
    HistogramObservable,
    NotComputableError,
    Observable,
    ObservableResult,
)
from cgkd.observables.blocks import block_average
from cgkd.observables.bonds import BondLengths
from cgkd.observables.compare import (
    compare,
    deviation,
    jensen_shannon_divergence,
    mean_absolute_deviation,
    relative_integrated_deviation,
)
from cgkd.observables.dynamics import MSD, VACF, diffusion_ratio
from cgkd.observables.order import (
    CoordinationNumbers,
    LocalDensity,
    Steinhardt,
    TetrahedralOrder,
)
from cgkd.observables.plots import plot_comparison, plot_maps
from cgkd.observables.rdf import (
    RDF,
    coordination_number,
    first_minimum,
    rdf_onset,
    species_pairs,
)
from cgkd.observables.structure import StructureFactor, structure_factor
from cgkd.observables.suite import evaluate
from cgkd.observables.trajectory import Frame, Trajectory

__all__ = [
    "ADF",
    "CDF",
    "MSD",
    "RDF",
    "VACF",
    "BondLengths",
    "CoordinationNumbers",
    "Frame",
    "HistogramObservable",
    "LocalDensity",
    "NotComputableError",
    "Observable",
    "ObservableResult",
    "Steinhardt",
    "StructureFactor",
    "TetrahedralOrder",
    "Trajectory",
    "block_average",
    "compare",
    "coordination_number",
    "deviation",
    "diffusion_ratio",
    "evaluate",
    "first_minimum",
    "jensen_shannon_divergence",
    "mean_absolute_deviation",
    "plot_comparison",
    "plot_maps",
    "rdf_onset",
    "relative_integrated_deviation",
    "species_pairs",
    "structure_factor",
]
