"""The classical baseline (``classical``): one pair table per bead-type pair force-matched
(MS-CG) on the reference training frames' mapped forces (``classical.targets=mapped``) or
the teacher's labels of them (``teacher``), with the priors; it runs as a native OpenMM
System (``classical.xml``; no torch) and is also exported as plain TorchScript."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from cgkd.models.checkpoint import build_potential, save_potential
from cgkd.models.force_matching import TARGETS, TableSettings, fit_pair_table
from cgkd.models.priors import build_priors
from cgkd.simulation.export import export_torchscript
from cgkd.simulation.native import export_native
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import SPLIT_READS, dataset, fitted_prior, reference_splits
from cgkd.training.dataset import Targets, TrainingData
from cgkd.training.trainer import evaluate

log = logging.getLogger(__name__)


def _targets(context: Context) -> str:
    targets = context("classical.targets")
    if targets not in TARGETS:
        raise ValueError(f"classical.targets={targets!r} is unknown; use mapped or teacher")
    return targets


def _classical(context: Context) -> Record:
    settings: TableSettings = context.settings("classical")
    targets = settings.targets
    frames, out = dataset(context.upstream["cg"]), context.directory
    splits = reference_splits(context, frames.n_frames)
    labels = None
    if "labels" in context.upstream:
        labels = Targets.load(context.upstream["labels"]["targets"])
    prior = fitted_prior(context.upstream["prior"])
    forces = frames.forces if labels is None else labels.forces
    table, facts = fit_pair_table(
        frames.positions[splits.train],
        frames.boxes[splits.train],
        forces[splits.train],
        frames.types,
        len(frames.type_names),
        np.asarray(prior["exclusions"] if prior else np.zeros((0, 2)), dtype=np.int64),
        None if prior is None else build_priors(prior),
        settings,
        progress=context.progress,
    )
    potential = build_potential([], prior, pair_table=table.spec())
    save_potential(out / "classical.pt", potential, [], prior, {"fit": facts})
    species = torch.as_tensor(frames.types)
    meta = {"type_names": frames.type_names, "config": context("classical")}
    export_torchscript(copy.deepcopy(potential).float(), species, out / "classical.ts", meta)
    native = export_native(
        potential, species, frames.masses, frames.boxes[-1], out / "classical.xml"
    )
    held_out = evaluate(potential.float(), TrainingData.from_frames(frames, labels), splits.test)
    log.info(
        "classical (%s forces): %d knots per table from %.3f nm; held-out force RMSE "
        "%.2f kJ/mol/nm",
        targets,
        facts["n_knots"],
        facts["r_min"],
        held_out["force_rmse_mapped"],
    )
    return {
        "model": str(native),
        "torchscript": str(out / "classical.ts"),
        "checkpoint": str(out / "classical.pt"),
        **facts,
        **held_out,
    }


CLASSICAL = Stage(
    name="classical",
    summary="classical CG baseline: pair tables force-matched (MS-CG), a native OpenMM System",
    build=_classical,
    reads=("classical", *SPLIT_READS),
    needs=lambda context: {
        "cg": Request("map"),
        "prior": Request("prior"),
        **({"labels": Request("label")} if _targets(context) == "teacher" else {}),
    },
)
