"""The CG dataset (``map``): bead positions, mapped forces, boxes, types, masses and CG
bonds; and the dry run of a mapping (:func:`beads`)."""

from __future__ import annotations

import logging
from typing import Any

from MDAnalysis import Universe
from omegaconf import DictConfig

from cgkd.config import to_settings
from cgkd.io.atoms import atom_masses
from cgkd.io.h5md import H5MDReader
from cgkd.io.reader import open_trajectory
from cgkd.io.trajectory import FrameSelection, sample_frames
from cgkd.mapping.apply import map_trajectory, topology_universe
from cgkd.mapping.constraints import spread_frames, virtual_sites
from cgkd.mapping.definition import MappingSpec, compile_mapping
from cgkd.stages.base import Context, Record, Stage, plain
from cgkd.stages.reference import SELECTION_KEYS, reference_request

log = logging.getLogger(__name__)


def _map(context: Context) -> Record:
    aa, out = context.upstream["aa"], context.directory
    spec: MappingSpec = context.settings("mapping")
    mapped = map_trajectory(
        aa["topology"],
        aa["trajectory"],
        out / "cg.h5md",
        spec,
        config={"aa": aa},
        progress=context.progress,
    )
    log.info("mapping %s:\n%s", spec.describe(), mapped.summary)
    return {
        "dataset": str(out / "cg.h5md"),
        "n_frames": mapped.n_frames,
        "n_beads": mapped.n_beads,
        "type_names": mapped.type_names,
    }


MAP = Stage(
    name="map",
    summary="CG dataset: bead positions, mapped forces, types, masses, bonds",
    build=_map,
    reads=("mapping", "input.trajectory"),
    needs=lambda context: {"aa": reference_request(context)},
    version=2,  # 2: CG bonds are recorded
)


def beads(cfg: DictConfig, reference: Record | None = None) -> dict[str, Any]:
    """Dry run of the mapping: its bead summary, logged, without importing or mapping frames.

    Your own data: on ``input.topology``, with masses and virtual sites judged from a few
    frames of ``input.trajectory``. A built-in system uses its generated reference
    (``reference``, the generate record).
    """
    spec: MappingSpec = to_settings(cfg.mapping)
    if reference is not None:
        with H5MDReader(reference["trajectory"]) as reader:
            sites = virtual_sites(reader.masses, spread_frames(reader).forces)
            universe = topology_universe(reference["topology"], reader)
            compiled = compile_mapping(spec, universe, reader.masses, sites)
    else:
        source = plain(cfg.input)
        opened = open_trajectory(
            source["topology"] or "",
            source["trajectory"],
            units=source["units"],
            format=source["format"],
            timestep=source["timestep"],
        )
        selection = FrameSelection(**{k: source[k] for k in SELECTION_KEYS})
        masses = atom_masses(opened, sample_frames(opened, selection), source["masses"])
        universe = Universe(str(source["topology"]))
        compiled = compile_mapping(spec, universe, masses.values, masses.virtual_sites)
    log.info("mapping %s:\n%s", spec.describe(), compiled.summary())
    return {
        "mapping": spec.describe(),
        "n_beads": compiled.n_beads,
        "type_names": compiled.type_names,
    }
