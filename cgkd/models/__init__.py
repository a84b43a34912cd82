"""CG potentials: HIP-NN-TS networks, the classical pair table, priors and neighbour lists,
composed into one :class:`CGPotential` (energy in kJ/mol, forces in kJ/mol/nm)."""

from cgkd.models.checkpoint import build_potential, load_potential, merge_members, save_potential
from cgkd.models.force_matching import TableSettings, fit_pair_table
from cgkd.models.hipnn import HipnnTS
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.pair_table import PairTable
from cgkd.models.potential import CGPotential
from cgkd.models.priors import CGTopology, Priors, build_priors, fit_priors

__all__ = [
    "CGPotential",
    "CGTopology",
    "HipnnTS",
    "PairTable",
    "Priors",
    "TableSettings",
    "build_potential",
    "build_priors",
    "fit_pair_table",
    "fit_priors",
    "load_potential",
    "merge_members",
    "neighbor_pairs",
    "save_potential",
]
