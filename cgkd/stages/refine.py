"""Relative-entropy refinement (``refined``): the model of ``refine.start`` (the baseline or
the student) refined against the reference's training frames, sampling its own CG MD as it
goes (:mod:`cgkd.training.relative_entropy`, :class:`cgkd.simulation.walkers.Walkers`).

The walkers run Langevin dynamics at ``simulate.temperature`` and ``simulate.timestep``
with simulate's stability limits, in the flavour ``simulate.kernels`` picks, from the last
reference frames back over the dataset (as simulate's replicas start). The record holds the
refined model (``refined.pt``, ``refined.ts`` and its fused flavour), the round-by-round
history (drawn in ``refinement.png``) and the held-out force errors before
(``start_force_rmse_mapped``) and after: what fitting the ensemble cost in fitting the forces
frame by frame.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from cgkd.models.checkpoint import load_potential, save_potential
from cgkd.simulation.export import export_flavours
from cgkd.simulation.md import MDSettings, model_file
from cgkd.simulation.walkers import Walkers
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import SPLIT_READS, dataset, reference_splits
from cgkd.training.curves import plot_refinement
from cgkd.training.dataset import TrainingData
from cgkd.training.relative_entropy import RefineSettings, refine
from cgkd.training.trainer import evaluate

#: The simulate settings the walkers run with.
_MD_READS = tuple(
    f"simulate.{name}"
    for name in (
        "temperature",
        "timestep",
        "min_distance",
        "max_temperature_factor",
        "minimize",
        "platform",
        "kernels",
    )
)


def _walker_settings(context: Context) -> MDSettings:
    """Langevin CG MD at simulate's temperature and time step (friction 1/ps, the default)."""
    values = {path.split(".", 1)[1]: context(path) for path in _MD_READS}
    return MDSettings(**values, threads=context("simulate.threads"), seed=context("seed"))


def _refined(context: Context) -> Record:
    settings: RefineSettings = context.settings("refine")
    out, seed = context.directory, context("seed")
    cg, start = context.upstream["cg"], context.upstream["start"]
    frames = dataset(cg)
    splits = reference_splits(context, frames.n_frames)
    potential, _ = load_potential(Path(start["checkpoint"]))
    saved = torch.load(start["checkpoint"], weights_only=False)  # its networks and prior
    potential = potential.to(context.device)
    species = torch.as_tensor(frames.types, device=context.device)
    data = TrainingData.from_frames(frames)
    before = evaluate(potential, data, splits.test)["force_rmse_mapped"]
    md = _walker_settings(context)
    type_names = cg["type_names"]
    meta = {"type_names": type_names, "config": context("refine"), "refined_from": start["key"]}

    def exported() -> Path:
        """The model as it is now, exported from a CPU copy (it may train on a GPU)."""
        current = copy.deepcopy(potential).cpu()
        files = export_flavours(current, species.cpu(), out / "refined.ts", meta)
        return model_file(Path(files["plain"]), files["fused"] and Path(files["fused"]), md)

    n = frames.n_frames
    starts = [n - 1 - (k * n) // settings.walkers for k in range(settings.walkers)]
    walkers = Walkers(
        exported,
        frames.positions[starts],
        frames.boxes[starts],
        frames.masses,
        md,
        steps=settings.steps,
        save_interval=settings.save_interval,
        equilibration=settings.equilibration,
        seed=seed,
        bead_names=[frames.type_names[t] for t in frames.types],
    )

    def energies(positions: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return potential(positions, boxes, species).sum(1)

    history = refine(
        potential,
        energies,
        (frames.positions[splits.train], frames.boxes[splits.train]),
        walkers,
        settings,
        md.temperature,
        seed=seed,
        progress=context.progress,
        checkpoint=out / "checkpoint.pt",
    )
    potential = potential.cpu().eval()
    save_potential(
        out / "refined.pt", potential, saved["network_kwargs"], saved["prior"], {"history": history}
    )
    files = export_flavours(potential, species.cpu(), out / "refined.ts", meta)
    if history:
        plot_refinement(history, out / "refinement.png", frames.n_particles)
    return {
        "model": files["plain"],
        "checkpoint": str(out / "refined.pt"),
        "refined_from": start["key"],
        "start_force_rmse_mapped": before,
        **evaluate(potential, data, splits.test),
        "seconds": history[-1]["seconds"] if history else 0.0,
        "history": history,
    }


REFINED = Stage(
    name="refined",
    summary="the baseline or the student refined by relative entropy against the reference",
    build=_refined,
    reads=("refine", *_MD_READS, *SPLIT_READS),
    needs=lambda context: {
        "cg": Request("map"),
        "start": Request(RefineSettings(**context("refine")).start),
    },
    keep=("checkpoint.pt",),
)
