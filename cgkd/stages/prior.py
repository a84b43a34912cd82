"""Priors fitted to the mapped reference at its temperature (``prior``): repulsion onsets,
bonds and angles."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cgkd.geometry import perpendicular_widths
from cgkd.io.h5md import read_h5md_bonds
from cgkd.models.priors import CGTopology, fit_priors
from cgkd.stages.base import Context, Record, Request, Stage, write_json
from cgkd.stages.data import dataset
from cgkd.units import kt

log = logging.getLogger(__name__)


def _prior(context: Context) -> Record:
    cg, settings = context.upstream["cg"], context("prior")
    frames = dataset(cg)
    topology = CGTopology(read_h5md_bonds(cg["dataset"]), frames.types, frames.type_names)
    repulsion = settings["repulsion"]
    half_width = 0.49 * float(perpendicular_widths(torch.as_tensor(frames.boxes)).min())
    prior = fit_priors(
        frames.positions,
        frames.boxes,
        topology,
        kt(float(context("system.temperature"))),
        repulsion=repulsion if repulsion["enabled"] else None,
        bonds=settings["bonds"]["enabled"],
        angles=settings["angles"]["enabled"],
        r_max=min(half_width, 1.0),
    )
    path = context.directory / "prior.json"
    write_json(path, prior)
    log.info("priors: %s", describe_prior(prior, frames.type_names))
    return {"prior": str(path)}


def describe_prior(prior: dict[str, Any], type_names: list[str]) -> str:
    """One line: the repulsion onsets and the fitted bonds and angles."""
    parts = []
    if prior["repulsion"] is not None:
        sigma = np.asarray(prior["repulsion"]["sigma"])
        onsets = ", ".join(
            f"{type_names[a]}-{type_names[b]} {sigma[a, b]:.3f}"
            for a in range(len(type_names))
            for b in range(a, len(type_names))
        )
        parts.append(f"repulsion onsets (nm) {onsets}")
    for term, unit, scale in (("bonds", "nm", 1.0), ("angles", "deg", 180.0 / np.pi)):
        if prior[term] is not None:
            fitted = prior[term]
            parts.append(
                f"{term} "
                + ", ".join(
                    f"{name} {centre * scale:.3g} {unit} (k {k:.3g})"
                    for name, centre, k in zip(
                        fitted["names"], fitted["centre"], fitted["k"], strict=True
                    )
                )
            )
    return "; ".join(parts) or "none"


PRIOR = Stage(
    name="prior",
    summary="repulsion, bond and angle priors fitted to the mapped data at its temperature",
    build=_prior,
    reads=("prior", "system.temperature"),
    needs=lambda context: {"cg": Request("map")},
)
