"""Frictions matched to the AA dynamics (``calibrate``), one stage per simulated model, run
when ``simulate.friction`` is ``matched``: short CG runs at ``simulate.calibration_frictions``,
each bead type's ``simulate.calibration_target`` against the reference's, one friction per
type, refined by ``simulate.calibration_refinements`` runs at the fitted frictions. The MSD's
D is fitted on the lag window the analysis will use for the reference and the CG runs; the
VACF targets compare dense segments (the ``segment`` stage's AA one, and CG runs recorded
every 10 fs) up to ``simulate.vacf_max_lag``."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md_bonds
from cgkd.observables.dynamics import shared_max_lag
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.dense import load_segment, record_dense
from cgkd.simulation.engine import start
from cgkd.simulation.friction import FrictionFit, describe, fit_friction, observed_by_type
from cgkd.simulation.md import MDSettings, cg_simulation, model_file, run_cg_md
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import dataset
from cgkd.stages.simulate import md_settings, model_files, model_request

log = logging.getLogger(__name__)

#: What the reference's D needs, named in the error when it has too few frames.
_TOO_SHORT = (
    "the AA reference needs more frames for the MSD (a longer system.production, or "
    "input.stop/step that keep more frames), or set simulate.friction to a number"
)
_LONGER = "lengthen simulate.calibration_steps"
#: What to change when a calibration run goes bad.
_BAD = "change simulate.calibration_frictions or calibration_refinements"


def _calibrate(context: Context) -> Record:
    name, cg = str(context.param), context.upstream["cg"]
    frames, bonds = dataset(cg), read_h5md_bonds(cg["dataset"])
    base = md_settings(context)
    target = base.calibration_target
    if target == "msd":
        aa = Trajectory.from_frames(frames, name="AA (mapped)")
        window, setting = _lag_window(context, base, aa), _TOO_SHORT
        _check_length(base, window)
    else:
        aa = load_segment(Path(context.upstream["segment"]["segment"]), "AA (mapped)")
        window, setting = base.vacf_max_lag, _LONGER
    n_blocks = int(context("analysis.n_blocks"))
    reference = observed_by_type(aa, setting, target=target, max_lag=window, n_blocks=n_blocks)
    plain, fused = model_files(name, context.upstream["model"])
    path = model_file(plain, fused, base)

    def measure(label: str, **thermostat: object) -> dict[str, tuple[float, float]]:
        """Each bead type's target quantity in a calibration run with ``thermostat``."""
        settings = replace(base, **thermostat, steps=base.calibration_steps, replicas=1)
        run = _dense_run if target != "msd" else _msd_run
        trajectory = run(context, path, frames, bonds, settings, label)
        return observed_by_type(trajectory, _LONGER, target=target, max_lag=window, n_blocks=2)

    runs = {
        f"{gamma:g}": {"frictions": {kind: float(gamma) for kind in reference}}
        | {"observed": measure(f"{gamma:g}", friction=float(gamma), frictions=None)}
        for gamma in base.calibration_frictions
    }

    def fit(kind: str, local: bool) -> FrictionFit:
        gammas = [run["frictions"][kind] for run in runs.values()]
        observed = [run["observed"][kind][0] for run in runs.values()]
        return fit_friction(gammas, observed, reference[kind][0], local=local)

    fits = {kind: fit(kind, local=False) for kind in reference}
    for step in range(1, base.calibration_refinements + 1):
        trial = {kind: fitted.matched for kind, fitted in fits.items()}
        runs[f"refine_{step}"] = {
            "frictions": trial,
            "observed": measure(f"refine_{step}", frictions=trial),
        }
        fits = {kind: fit(kind, local=True) for kind in reference}
    for kind, fitted in fits.items():
        log.info(
            "%s %s: matched friction %.3g 1/ps (reference %s %.4g)",
            name,
            kind,
            fitted.matched,
            describe(target),
            fitted.reference,
        )
    return {
        "frictions": {kind: fitted.matched for kind, fitted in fits.items()},
        "target": target,
        "observed": describe(target),
        "lag_window": window,
        "reference": reference,
        "runs": runs,
        "fits": {kind: fitted.to_json() for kind, fitted in fits.items()},
    }


def _check_length(settings: MDSettings, window: float) -> None:
    """Calibration runs long enough to fit D over the lag ``window`` (ps)."""
    calibration = settings.calibration_steps * settings.timestep
    if calibration < 2.0 * window + 2.0 * settings.report_interval * settings.timestep:
        raise ValueError(
            f"calibration runs of {calibration:g} ps are too short to fit D over the "
            f"analysis's lag window of {window:g} ps (twice it is needed); raise "
            "simulate.calibration_steps or set analysis.msd.max_lag lower"
        )


def _msd_run(
    context: Context,
    model: Path,
    frames: Frames,
    bonds: np.ndarray,
    settings: MDSettings,
    label: str,
) -> Trajectory:
    """The calibration run ``label``, saved as the pipeline's runs are (a frame every
    report_interval steps)."""
    result = run_cg_md(
        model,
        frames.positions[-1],
        frames.boxes[-1],
        frames.masses,
        settings,
        context.directory / f"friction_{label}",
        bead_names=[frames.type_names[t] for t in frames.types],
        bonds=bonds,
        progress=context.progress,
    )
    if not result.stable:
        raise ValueError(
            f"the calibration run {label} of the {context.param} went bad ({result.message}); "
            + _BAD
        )
    return Trajectory.from_dcd(
        result.trajectory,
        result.topology,
        dt=settings.report_interval * settings.timestep,
        types=frames.types,
        type_names=frames.type_names,
    )


def _dense_run(
    context: Context,
    model: Path,
    frames: Frames,
    bonds: np.ndarray,
    settings: MDSettings,
    label: str,
) -> Trajectory:
    """The calibration run ``label``, recorded densely with velocities (a VACF target)."""
    simulation = cg_simulation(
        model,
        frames.masses,
        frames.boxes[-1],
        settings,
        bead_names=[frames.type_names[t] for t in frames.types],
        bonds=bonds,
    )
    start(
        simulation,
        frames.positions[-1],
        minimize=(10.0, 200) if settings.minimize else None,
        temperature=settings.temperature,
        seed=settings.seed,
    )
    try:
        return record_dense(
            simulation,
            settings.timestep,
            settings.steps * settings.timestep,
            name=f"calibration run {label} of the {context.param}",
            types=frames.types,
            type_names=list(frames.type_names),
        )
    except RuntimeError as error:
        raise ValueError(f"{error}; {_BAD}") from None


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
        **(
            {"segment": Request("segment")}
            if context("simulate.calibration_target") != "msd"
            else {}
        ),
    },
    keep=("friction_*",),
    version=4,  # 2: D over the analysis's lag window, refinement runs; 3: noisy secants;
    # 4: targets other than the MSD's D
)
