"""Frictions matched to the AA dynamics (``calibrate``), one stage per simulated model, run
when ``simulate.friction`` is ``matched``: short CG runs at ``simulate.calibration_frictions``,
each bead type's diffusion coefficient against the reference's, one friction per type,
refined by ``simulate.calibration_refinements`` runs at the fitted frictions. D is fitted
on the lag window the analysis will use for the reference and the CG runs."""

from __future__ import annotations

import logging
from dataclasses import replace

from cgkd.io.h5md import read_h5md_bonds
from cgkd.observables.dynamics import shared_max_lag
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.friction import FrictionFit, diffusion_by_type, fit_friction
from cgkd.simulation.md import MDSettings, model_file, run_cg_md
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
    base = md_settings(context)
    aa = Trajectory.from_frames(frames, name="AA (mapped)")
    window = _lag_window(context, base, aa)
    n_blocks = int(context("analysis.n_blocks"))
    reference = diffusion_by_type(aa, _TOO_SHORT, max_lag=window, n_blocks=n_blocks)
    calibration = base.calibration_steps * base.timestep
    if calibration < 2.0 * window + 2.0 * base.report_interval * base.timestep:
        raise ValueError(
            f"calibration runs of {calibration:g} ps are too short to fit D over the "
            f"analysis's lag window of {window:g} ps (twice it is needed); raise "
            "simulate.calibration_steps or set analysis.msd.max_lag lower"
        )
    plain, fused = model_files(name, context.upstream["model"])
    path = model_file(plain, fused, base)
    names = [frames.type_names[t] for t in frames.types]

    def measure(label: str, **thermostat: object) -> dict[str, tuple[float, float]]:
        """Each bead type's D (nm^2/ps) in a calibration run with ``thermostat`` settings."""
        settings = replace(base, **thermostat, steps=base.calibration_steps, replicas=1)
        result = run_cg_md(
            path,
            frames.positions[-1],
            frames.boxes[-1],
            frames.masses,
            settings,
            context.directory / f"friction_{label}",
            bead_names=names,
            bonds=bonds,
            progress=context.progress,
        )
        if not result.stable:
            raise ValueError(
                f"the calibration run {label} of the {name} went bad ({result.message}); "
                "change simulate.calibration_frictions or calibration_refinements"
            )
        trajectory = Trajectory.from_dcd(
            result.trajectory,
            result.topology,
            dt=base.report_interval * base.timestep,
            types=frames.types,
            type_names=frames.type_names,
        )
        return diffusion_by_type(
            trajectory, "lengthen simulate.calibration_steps", max_lag=window, n_blocks=2
        )

    runs = {
        f"{gamma:g}": {"frictions": {kind: float(gamma) for kind in reference}}
        | {"diffusion": measure(f"{gamma:g}", friction=float(gamma), frictions=None)}
        for gamma in base.calibration_frictions
    }

    def fit(kind: str, local: bool) -> FrictionFit:
        gammas = [run["frictions"][kind] for run in runs.values()]
        diffusion = [run["diffusion"][kind][0] for run in runs.values()]
        return fit_friction(gammas, diffusion, reference[kind][0], local=local)

    fits = {kind: fit(kind, local=False) for kind in reference}
    for step in range(1, base.calibration_refinements + 1):
        trial = {kind: fitted.matched for kind, fitted in fits.items()}
        runs[f"refine_{step}"] = {
            "frictions": trial,
            "diffusion": measure(f"refine_{step}", frictions=trial),
        }
        fits = {kind: fit(kind, local=True) for kind in reference}
    for kind, fitted in fits.items():
        log.info(
            "%s %s: matched friction %.3g 1/ps (reference D %.4g nm^2/ps)",
            name,
            kind,
            fitted.matched,
            fitted.reference,
        )
    return {
        "frictions": {kind: fitted.matched for kind, fitted in fits.items()},
        "lag_window": window,
        "reference": reference,
        "runs": runs,
        "fits": {kind: fitted.to_json() for kind, fitted in fits.items()},
    }


def _lag_window(context: Context, settings: MDSettings, aa: Trajectory) -> float:
    """The longest MSD lag (ps) the analysis will fit D up to, for the reference and for the
    CG runs of ``settings`` alike (:func:`~cgkd.observables.dynamics.shared_max_lag`), so that
    the friction meets the reference's D as the analysis will measure it."""
    given = context("analysis.msd.max_lag")
    if given is not None:
        return float(given)
    interval = settings.report_interval * settings.timestep
    run = (settings.steps // settings.report_interval - 1) * interval
    if aa.duration is None:
        raise ValueError(f"the AA reference has no frame times: {_TOO_SHORT}")
    return shared_max_lag([[aa.duration], [run] * settings.replicas], context("analysis.n_blocks"))


CALIBRATE = Stage(
    name="calibrate",
    summary="frictions per bead type matching the AA diffusion (simulate.friction=matched)",
    build=_calibrate,
    # simulate.steps and replicas set the analysis's lag window, which D is matched over
    reads=("simulate", "seed", "teacher.source", "analysis.msd", "analysis.n_blocks"),
    ignores=("simulate.models", "simulate.friction", "simulate.frictions"),
    needs=lambda context: {
        "cg": Request("map"),
        "model": model_request(str(context.param), context("teacher.source")),
    },
    keep=("friction_*",),
    version=3,  # 2: D over the analysis's lag window, refinement runs; 3: noisy secants
)
