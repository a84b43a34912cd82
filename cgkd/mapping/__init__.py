"""Mapping operators: bead definitions (:class:`MappingSpec`), position maps and force maps
(basic, constraint-aware, optimal), applied to a whole trajectory by :func:`map_trajectory`."""

from cgkd.mapping.apply import LinearMapping, MappedDataset, map_trajectory
from cgkd.mapping.definition import (
    CompiledMapping,
    MappingError,
    MappingSpec,
    OptimalMapSettings,
    compile_mapping,
)
from cgkd.mapping.force_maps import build_force_map, force_map_is_valid, optimal_force_map

__all__ = [
    "CompiledMapping",
    "LinearMapping",
    "MappedDataset",
    "MappingError",
    "MappingSpec",
    "OptimalMapSettings",
    "build_force_map",
    "compile_mapping",
    "force_map_is_valid",
    "map_trajectory",
    "optimal_force_map",
]
