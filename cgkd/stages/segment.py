"""A dense AA segment with velocities (``segment``): the VACF reference of
``simulate.calibration_target=vacf`` or ``vacf_decay``. AA MD of the built-in system from the
reference's last frame, a frame every 10 fs for ``simulate.calibration_steps`` CG steps' worth
of time, positions and velocities mapped to beads. The reference itself keeps a frame every
``system.save_interval`` steps and no velocities, too sparse for a VACF."""

from __future__ import annotations

import logging

from cgkd.io.h5md import H5MDReader
from cgkd.mapping.apply import topology_universe
from cgkd.mapping.constraints import spread_frames, virtual_sites
from cgkd.mapping.definition import compile_mapping
from cgkd.simulation.dense import save_segment
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.systems.reference_md import dense_segment

log = logging.getLogger(__name__)


def _segment(context: Context) -> Record:
    aa = context.upstream["aa"]
    spec = context.settings("system", seed=context("data_seed"))
    picoseconds = context("simulate.calibration_steps") * context("simulate.timestep")
    with H5MDReader(aa["trajectory"]) as reader:
        last = reader.read(reader.n_frames - 1)
        universe = topology_universe(aa["topology"], reader)
        virtual = virtual_sites(reader.masses, spread_frames(reader).forces)
        mapping = compile_mapping(context.settings("mapping"), universe, reader.masses, virtual)
    log.info("dense AA segment for the VACF: %g ps, a frame every 10 fs", picoseconds)
    segment = dense_segment(
        spec,
        last.positions[0],
        last.boxes[0],
        picoseconds,
        lambda atoms: mapping.position_map @ atoms,
        name="AA (mapped)",
        types=mapping.types,
        type_names=list(mapping.type_names),
    )
    path = context.directory / "segment.npz"
    save_segment(segment, path)
    return {"segment": str(path), "picoseconds": picoseconds, "n_frames": len(segment)}


def _needs(context: Context) -> dict[str, Request]:
    if (data := context("input.trajectory")) is not None:
        raise ValueError(
            "simulate.calibration_target=vacf or vacf_decay needs AA velocities every 10 fs, "
            f"which cgkd makes only for a built-in system; your data ({data}) has none: use "
            "simulate.calibration_target=msd"
        )
    return {"aa": Request("generate")}


SEGMENT = Stage(
    name="segment",
    summary="dense AA segment with velocities, mapped (VACF targets of simulate.friction=matched)",
    build=_segment,
    reads=(
        "system",
        "data_seed",
        "mapping",
        "input.trajectory",
        "simulate.calibration_steps",
        "simulate.timestep",
    ),
    needs=_needs,
)
