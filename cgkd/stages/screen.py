"""Hard targets of two-stage distillation (``screen``): the reference training frames that
``screening`` picks (fps on structural descriptors, teacher disagreement, or random)."""

from __future__ import annotations

import logging

import numpy as np

from cgkd.stages.base import Context, Record, Request, Stage, write_json
from cgkd.stages.data import SPLIT_READS, dataset, reference_splits
from cgkd.stages.teacher import n_teachers
from cgkd.training.dataset import Targets
from cgkd.training.screening import METHODS, frame_descriptors, select_frames

log = logging.getLogger(__name__)

#: What screening by disagreement checks about the teacher (its labels are upstream).
_DISAGREEMENT_READS = ("teacher.source", "teacher.n_members", "loss.n_teachers")


def _method(context: Context) -> str:
    method = context("screening.method")
    if method not in METHODS:
        raise ValueError(f"screening.method={method!r} is unknown; use one of {list(METHODS)}")
    return method


def _needs(context: Context) -> dict[str, Request]:
    needs = {"cg": Request("map")}
    if _method(context) == "disagreement":
        several = n_teachers(context("teacher.n_members"), context("loss.n_teachers")) > 1
        if context("teacher.source") != "ensemble" or not several:
            raise ValueError(
                "screening=disagreement needs the spread of several teachers: use "
                "teacher.source=ensemble with loss.n_teachers > 1 (or null)"
            )
        needs["labels"] = Request("label")
    return needs


def _screen(context: Context) -> Record:
    method, fraction = _method(context), float(context("screening.fraction"))
    if not 0 < fraction <= 1:
        raise ValueError(f"screening.fraction={fraction} must be in (0, 1]")
    frames = dataset(context.upstream["cg"])
    scores = None
    if "labels" in context.upstream:
        spread = Targets.load(context.upstream["labels"]["targets"]).force_std
        scores = np.asarray(spread.mean(axis=(1, 2)))
    candidates = reference_splits(context, frames.n_frames).train
    n_pick = max(1, round(fraction * len(candidates)))
    descriptors = frame_descriptors(
        frames.select(candidates),
        r_max=float(context("screening.r_max")),
        n_bins=int(context("screening.n_bins")),
    )
    picked = select_frames(
        method,
        n_pick,
        descriptors=descriptors.values,
        scores=None if scores is None else scores[candidates],
        seed=int(context("seed")),
    )
    out = context.directory
    np.savez(
        out / "descriptors.npz",
        frames=candidates,
        values=descriptors.values,
        names=np.asarray(descriptors.names),
    )
    selection = {
        "method": method,
        "fraction": fraction,
        "n_candidates": len(candidates),
        "indices": candidates[picked].tolist(),
        "descriptor_names": descriptors.names,
        "descriptors": descriptors.values[picked].tolist(),
        **({"scores": scores[candidates][picked].tolist()} if scores is not None else {}),
    }
    write_json(out / "selection.json", selection)
    log.info("screening (%s): %d of %d training frames", method, n_pick, len(candidates))
    return {
        "selection": str(out / "selection.json"),
        "indices": selection["indices"],
        "n_selected": n_pick,
    }


SCREEN = Stage(
    name="screen",
    summary="the reference frames picked for hard targets (two-stage), with descriptors",
    build=_screen,
    reads=lambda context: (
        "screening",
        *SPLIT_READS,
        *(_DISAGREEMENT_READS if _method(context) == "disagreement" else ()),
    ),
    needs=_needs,
)
