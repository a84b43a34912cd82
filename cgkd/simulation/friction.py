"""Frictions that make each bead type move as in the AA reference.

A CG model's beads diffuse faster than the molecules they stand for. With Langevin or DPD
friction gamma, 1/D grows close to linearly in gamma (D ~ kT / (m gamma_total)): a few
short CG runs at different frictions give, per bead type, the line 1/D(gamma), and the
friction where it meets the reference's 1/D is that type's matched friction. The matched
quantity (:data:`TARGETS`) is D from the mean squared displacement, D from the velocity
autocorrelation's integral (Green-Kubo), or the VACF's 1/e decay time, whose inverse also
grows about linearly in gamma (a free particle's is gamma). Units: nm, ps, 1/ps; D in nm^2/ps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cgkd.observables.base import NotComputableError, ObservableResult
from cgkd.observables.dynamics import MSD, VACF
from cgkd.observables.trajectory import Trajectory

#: What a calibration matches, by ``simulate.calibration_target``: its description (with unit).
TARGETS = ("msd", "vacf", "vacf_decay")
_DESCRIPTION = {
    "msd": "diffusion coefficient (MSD, nm^2/ps)",
    "vacf": "diffusion coefficient (Green-Kubo, nm^2/ps)",
    "vacf_decay": "VACF 1/e decay time (ps)",
}


@dataclass(frozen=True)
class FrictionFit:
    """One bead type's fit: the frictions tried (1/ps) and the target quantity of each (D in
    nm^2/ps or a decay time in ps), the reference's, and the matched friction (1/ps; 0 when
    even no friction is too slow)."""

    frictions: tuple[float, ...]
    observed: tuple[float, ...]
    reference: float
    matched: float
    clipped: bool

    def to_json(self) -> dict[str, object]:
        """The fit as a record entry."""
        return {
            "frictions": list(self.frictions),
            "observed": list(self.observed),
            "reference": self.reference,
            "matched": self.matched,
            "clipped": self.clipped,
        }


def describe(target: str) -> str:
    """What ``target`` measures, with its unit."""
    return _DESCRIPTION[target]


def observed_by_type(
    trajectories: Trajectory | Sequence[Trajectory],
    setting: str,
    *,
    target: str = "msd",
    max_lag: float | None = None,
    n_blocks: int = 5,
) -> dict[str, tuple[float, float]]:
    """Each bead type's ``target`` quantity (:data:`TARGETS`) and its standard error over
    ``n_blocks``: D (nm^2/ps) from the MSD, or from the VACF's integral, or the VACF's 1/e
    decay time (ps); lags up to ``max_lag`` ps (None: half a block). A trajectory too short
    for the estimate is a one-line error naming ``setting``."""
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    names = runs[0].type_names or [str(k) for k in range(int(runs[0].types.max()) + 1)]
    found = {}
    for name in names:
        try:
            if target == "msd":
                result = MSD(species=name, max_lag=max_lag).run(runs, n_blocks=n_blocks)
                found[name] = (float(result.attrs["D"]), float(result.attrs.get("D_err", 0.0)))
                continue
            result = VACF(species=name, max_lag=max_lag).run(runs, n_blocks=n_blocks)
            if target == "vacf":
                value = (result.attrs["D_green_kubo"], result.attrs["D_green_kubo_err"])
            else:
                value = (decay_time(result), 0.0)
            found[name] = (float(value[0]), float(value[1]))
        except NotComputableError as error:
            raise ValueError(f"no {describe(target)} of {name}: {error}; {setting}") from None
    return found


def decay_time(vacf: ObservableResult) -> float:
    """The lag (ps) at which a normalised VACF first falls to 1/e, interpolated linearly
    between frames; NotComputableError when it stays above within the lags computed."""
    below = np.flatnonzero(vacf.y <= np.exp(-1.0))
    if not len(below):
        raise NotComputableError(
            f"{vacf.name} stays above 1/e up to {vacf.x[-1]:g} ps; raise simulate.vacf_max_lag"
        )
    k = int(below[0])
    (t0, t1), (c0, c1) = vacf.x[k - 1 : k + 1], vacf.y[k - 1 : k + 1]
    return float(t0 + (c0 - np.exp(-1.0)) * (t1 - t0) / (c0 - c1))


def fit_friction(
    frictions: Sequence[float], observed: Sequence[float], reference: float, *, local: bool = False
) -> FrictionFit:
    """The friction (1/ps) at which the line through (gamma, 1/D) reaches 1/``reference``:
    least squares over the runs at ``frictions`` with values ``observed`` (D, or any target
    that falls with the friction, its inverse about linearly), or with
    ``local`` the secant through the two runs whose 1/D is nearest the target (a refinement
    step). A secant whose slope is not within half to twice the least-squares slope is
    noise (two runs at nearly the same D): the step then takes the least-squares slope
    through the run nearest the target. A reference faster than
    the fit allows at zero friction gives 0 (``clipped``)."""
    gammas = np.asarray(frictions, dtype=float)
    values = np.asarray(observed, dtype=float)
    if len(gammas) < 2 or len(set(gammas.tolist())) < 2:
        raise ValueError("a friction fit needs runs at two or more different frictions")
    if np.any(values <= 0) or reference <= 0:
        raise ValueError(f"the matched values must be positive, got {values} and {reference}")
    slope, intercept = np.polyfit(gammas, 1.0 / values, 1)
    if slope <= 0:
        raise ValueError(
            f"the target does not fall with the friction ({values.round(5).tolist()} at "
            f"{gammas.tolist()} 1/ps); lengthen the calibration runs"
        )
    if local:
        nearest = np.argsort(np.abs(1.0 / values - 1.0 / reference), kind="stable")[:2]
        (g0, g1), (y0, y1) = gammas[nearest], 1.0 / values[nearest]
        secant = (y1 - y0) / (g1 - g0) if g0 != g1 else 0.0
        # Two runs at nearly the same D give a secant of noise: then keep the overall slope,
        # through the run nearest the target.
        slope = secant if 0.5 * slope <= secant <= 2.0 * slope else slope
        intercept = y0 - slope * g0
    matched = (1.0 / reference - intercept) / slope
    return FrictionFit(
        tuple(gammas.tolist()),
        tuple(values.tolist()),
        float(reference),
        float(max(matched, 0.0)),
        bool(matched < 0),
    )
