"""The AA reference: generated from a built-in system (``generate``) or imported from the
user's topology and trajectory (``import``), as H5MD with forces."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cgkd.io.trajectory import FrameScreen, FrameSelection, import_trajectory
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.systems.reference_md import generate as generate_system

log = logging.getLogger(__name__)

#: The frame selection keys of the ``input`` section.
SELECTION_KEYS = ("start", "stop", "step", "time_start", "time_stop")
#: The ``input`` keys that determine the imported data (input.name only labels the report;
#: the files enter the key by their contents).
_IMPORT_KEYS = ("units", "format", "timestep", "max_force", "on_bad_frame", "masses", "temperature")
IMPORT_READS = tuple(f"input.{key}" for key in (*SELECTION_KEYS, *_IMPORT_KEYS))


def reference_request(context: Context) -> Request:
    """The stage that gives the AA reference: import for your own data, else generate."""
    return Request("import") if context("input.trajectory") is not None else Request("generate")


def _generate(context: Context) -> Record:
    system = context("system")
    spec = context.settings("system", seed=context("data_seed"))
    log.info("generating the AA reference: %s", system["name"])
    made = generate_system(
        spec, context.directory, config={"system": system}, progress=context.progress
    )
    return made.to_dict()


def _import(context: Context) -> Record:
    out = context.directory
    source = {path.split(".", 1)[1]: context(path) for path in (*IMPORT_READS, *FILES)}
    if source["topology"] is None:
        raise ValueError("input.topology is not set; give the topology of input.trajectory")
    topology, trajectory = Path(source["topology"]), Path(source["trajectory"])
    topology_copy = out / f"aa_topology{''.join(topology.suffixes)}"
    shutil.copyfile(topology, topology_copy)
    imported = import_trajectory(
        topology,
        trajectory,
        out / "aa.h5md",
        selection=FrameSelection(**{k: source[k] for k in SELECTION_KEYS}),
        units=source["units"],
        format=source["format"],
        timestep=source["timestep"],
        screen=FrameScreen(max_force=source["max_force"], on_bad_frame=source["on_bad_frame"]),
        masses=source["masses"],
        temperature=source["temperature"],
        require_temperature=True,
        config={"input": source},
        progress=context.progress,
    )
    return {
        "trajectory": str(imported.path),
        "topology": str(topology_copy),
        "n_atoms": imported.n_atoms,
        "n_frames": imported.n_frames,
        "n_dropped": imported.n_dropped,
        "temperature": imported.temperature,
        "temperature_from": imported.temperature_from,
    }


FILES = ("input.trajectory", "input.topology")

GENERATE = Stage(
    name="generate",
    summary="AA reference trajectory with forces (H5MD) of a built-in system",
    build=_generate,
    reads=("system", "data_seed"),
)
IMPORT = Stage(
    name="import",
    summary="your topology + trajectory, selected, screened and converted into H5MD",
    build=_import,
    reads=IMPORT_READS,
    files=FILES,
)
