"""Structural observables (RDF, ADF) of CG trajectories, their comparison and plots."""

from cgkd.observables.adf import ADF
from cgkd.observables.base import Observable, ObservableResult
from cgkd.observables.blocks import block_average
from cgkd.observables.compare import (
    compare,
    mean_absolute_deviation,
    relative_integrated_deviation,
)
from cgkd.observables.plots import plot_comparison
from cgkd.observables.rdf import RDF, rdf_onset

__all__ = [
    "ADF",
    "RDF",
    "Observable",
    "ObservableResult",
    "block_average",
    "compare",
    "mean_absolute_deviation",
    "plot_comparison",
    "rdf_onset",
    "relative_integrated_deviation",
]
