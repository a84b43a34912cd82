"""The teacher ensemble: ``member`` (one HIP-NN-TS teacher, trained on mapped forces; its own
cached stage, so members can be separate jobs) and ``teach`` (the members merged, exported
and evaluated)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cgkd.models.checkpoint import build_potential, load_potential, merge_members, save_potential
from cgkd.models.potential import CGPotential
from cgkd.simulation.export import export_flavours
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import (
    SPLIT_READS,
    fitted_prior,
    force_matching,
    reference_splits,
    train_settings,
    training_frames,
)
from cgkd.training.curves import plot_loss_curves
from cgkd.training.dataset import Splits
from cgkd.training.trainer import evaluate, train_potential

log = logging.getLogger(__name__)


def member_seed(seed: int, member: int) -> int:
    """The seed of ensemble member ``member``: seed + 1000 (member + 1)."""
    return int(seed) + 1000 * (member + 1)


def _member(context: Context) -> Record:
    member, out = int(context.param), context.directory
    cg, data = context.upstream["cg"], training_frames(context, context.upstream["cg"])
    seed = member_seed(context("seed"), member)
    prior = fitted_prior(context.upstream["prior"])
    splits = reference_splits(context, data.n_frames)
    if context("teacher.bootstrap"):
        # Each member sees its own resample (with replacement) of the training frames.
        rng = np.random.default_rng(seed)
        splits = Splits(
            train=np.sort(rng.choice(splits.train, len(splits.train))),
            val=splits.val,
            test=splits.test,
        )
    network = {**context("teacher.model"), "n_species": len(cg["type_names"])}
    potential = build_potential([network], prior, seeds=[seed])
    settings = train_settings(context, "teacher.train", seed)
    result = train_potential(
        potential,
        data,
        splits,
        force_matching(settings),
        settings,
        description=f"teacher.member={member}",
        progress=context.progress,
        checkpoint=out / "checkpoint.pt",
        device=context.device,
    )
    save_potential(out / "teacher.pt", potential, [network], prior, {"history": result.history})
    return {
        "member": member,
        "seed": seed,
        "model": str(out / "teacher.pt"),
        "network": network,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        **result.test_metrics,
        "history": result.history,
    }


MEMBER = Stage(
    name="member",
    summary="one teacher (teacher.member=K), trained on mapped forces",
    build=_member,
    reads=("teacher.model", "teacher.train", "teacher.bootstrap", *SPLIT_READS),
    needs=lambda context: {"cg": Request("map"), "prior": Request("prior")},
    keep=("checkpoint.pt",),
    data_parallel=True,
)


def load_members(records: list[Record]) -> list[tuple[CGPotential, list[dict[str, Any]]]]:
    """The trained teachers of member records, each with its network settings, as
    ``merge_members`` takes them."""
    return [(load_potential(Path(m["model"]))[0], [m["network"]]) for m in records]


def members(context: Context) -> list[Record]:
    """The member records a teach stage's build sees, in member order."""
    return [context.upstream[f"member_{k}"] for k in range(context("teacher.n_members"))]


#: The teacher settings an ensemble records in its exported files.
_ENSEMBLE_KEYS = ("n_members", "model", "train", "bootstrap")


def _teach(context: Context) -> Record:
    out, cg = context.directory, context.upstream["cg"]
    data, trained = training_frames(context, cg), members(context)
    loaded = load_members(trained)
    ensemble, kwargs = merge_members(loaded)
    prior = fitted_prior(context.upstream["prior"])
    save_potential(out / "ensemble.pt", ensemble, kwargs, prior)
    species = data.species
    config = {key: context(f"teacher.{key}") for key in _ENSEMBLE_KEYS}
    meta = {"type_names": list(cg["type_names"]), "config": config}
    for k, (potential, _) in enumerate(loaded):
        export_flavours(potential, species, out / f"teacher_{k}.ts", meta)
    export_flavours(ensemble, species, out / "ensemble.ts", meta)
    plot_loss_curves(
        {f"teacher_{m['member']}": m["history"] for m in trained},
        out / "loss.png",
        title=f"{len(trained)} teachers",
    )
    splits = reference_splits(context, data.n_frames)
    held_out = evaluate(ensemble, data, splits.test)
    named = [*((f"teacher_{m['member']}", m) for m in trained), ("ensemble", held_out)]
    for name, metrics in named:
        log.info(
            "%s: held-out force RMSE %.2f kJ/mol/nm = %.3f x the RMS mapped force",
            name,
            metrics["force_rmse_mapped"],
            metrics["force_rmse_mapped"] / metrics["mapped_force_rms"],
        )
    return {
        "dir": str(out),
        "splits": splits.to_dict(),
        "members": [{k: v for k, v in m.items() if k != "key"} for m in trained],
        "ensemble": held_out,
        "prior": prior,
    }


def member_requests(n_members: int) -> dict[str, Request]:
    """The upstream requests of an ensemble of ``n_members``."""
    return {f"member_{k}": Request("member", k) for k in range(n_members)}


TEACH = Stage(
    name="teach",
    summary="teacher ensemble: the members merged, exported (TorchScript) and evaluated",
    build=_teach,
    reads=(*(f"teacher.{key}" for key in _ENSEMBLE_KEYS), *SPLIT_READS),
    needs=lambda context: {
        "cg": Request("map"),
        "prior": Request("prior"),
        **member_requests(context("teacher.n_members")),
    },
)
