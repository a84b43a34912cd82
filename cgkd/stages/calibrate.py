"""Frictions matched to the AA dynamics (``calibrate``), one stage per simulated model, run
when ``simulate.friction`` is ``matched``: short CG runs at ``simulate.calibration_frictions``,
each bead type's diffusion coefficient against the reference's, one friction per type."""

from __future__ import annotations

import logging
from dataclasses import replace

from cgkd.io.h5md import read_h5md_bonds
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.friction import diffusion_by_type, fit_friction
from cgkd.simulation.md import model_file, run_cg_md
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import dataset
from cgkd.stages.simulate import md_settings, model_files, model_request

log = logging.getLogger(__name__)

#: What the reference's D needs, named in the error when it has too few frames.
_TOO_SHORT = (
    "the AA reference needs more frames for the MSD (a longer system.production, or "
    "input.stop/step that keep more frames), or set simulate.friction to a number"
)


def _calibrate(context: Context) -> Record:
    name, cg = str(context.param), context.upstream["cg"]
    frames, bonds = dataset(cg), read_h5md_bonds(cg["dataset"])
    reference = diffusion_by_type(Trajectory.from_frames(frames, name="AA (mapped)"), _TOO_SHORT)
    base = md_settings(context)
    plain, fused = model_files(name, context.upstream["model"])
    path = model_file(plain, fused, base)
    names = [frames.type_names[t] for t in frames.types]
    dt = base.report_interval * base.timestep
    runs = {}
    for gamma in base.calibration_frictions:
        settings = replace(
            base, friction=float(gamma), frictions=None, steps=base.calibration_steps, replicas=1
        )
        result = run_cg_md(
            path,
            frames.positions[-1],
            frames.boxes[-1],
            frames.masses,
            settings,
            context.directory / f"friction_{gamma:g}",
            bead_names=names,
            bonds=bonds,
            progress=context.progress,
        )
        if not result.stable:
            raise ValueError(
                f"the calibration run of the {name} at friction {gamma:g} 1/ps went bad "
                f"({result.message}); change simulate.calibration_frictions"
            )
        trajectory = Trajectory.from_dcd(
            result.trajectory,
            result.topology,
            dt=dt,
            types=frames.types,
            type_names=frames.type_names,
        )
        runs[f"{gamma:g}"] = diffusion_by_type(trajectory, "lengthen simulate.calibration_steps")
    fits = {
        kind: fit_friction(
            base.calibration_frictions,
            [runs[f"{gamma:g}"][kind][0] for gamma in base.calibration_frictions],
            reference[kind][0],
        )
        for kind in reference
    }
    for kind, fit in fits.items():
        log.info(
            "%s %s: matched friction %.3g 1/ps (reference D %.4g nm^2/ps)",
            name,
            kind,
            fit.matched,
            fit.reference,
        )
    return {
        "frictions": {kind: fit.matched for kind, fit in fits.items()},
        "reference": reference,
        "runs": runs,
        "fits": {kind: fit.to_json() for kind, fit in fits.items()},
    }


CALIBRATE = Stage(
    name="calibrate",
    summary="frictions per bead type matching the AA diffusion (simulate.friction=matched)",
    build=_calibrate,
    reads=("simulate", "seed", "teacher.source"),
    ignores=(
        "simulate.models",
        "simulate.steps",
        "simulate.replicas",
        "simulate.friction",
        "simulate.frictions",
    ),
    needs=lambda context: {
        "cg": Request("map"),
        "model": model_request(str(context.param), context("teacher.source")),
    },
    keep=("friction_*",),
)
