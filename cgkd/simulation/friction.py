"""Frictions that make each bead type diffuse as in the AA reference.

A CG model's beads diffuse faster than the molecules they stand for. With Langevin or DPD
friction gamma, 1/D grows close to linearly in gamma (D ~ kT / (m gamma_total)): a few
short CG runs at different frictions give, per bead type, the line 1/D(gamma), and the
friction where it meets the reference's 1/D is that type's matched friction. Units: nm, ps,
1/ps; D in nm^2/ps from the mean squared displacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cgkd.observables.base import NotComputableError
from cgkd.observables.dynamics import MSD
from cgkd.observables.trajectory import Trajectory


@dataclass(frozen=True)
class FrictionFit:
    """One bead type's fit: the frictions tried (1/ps) and the D of each (nm^2/ps), the
    reference D, and the matched friction (1/ps; 0 when even no friction is too slow)."""

    frictions: tuple[float, ...]
    diffusion: tuple[float, ...]
    reference: float
    matched: float
    clipped: bool

    def to_json(self) -> dict[str, object]:
        """The fit as a record entry."""
        return {
            "frictions": list(self.frictions),
            "diffusion": list(self.diffusion),
            "reference": self.reference,
            "matched": self.matched,
            "clipped": self.clipped,
        }


def diffusion_by_type(
    trajectories: Trajectory | Sequence[Trajectory],
    setting: str,
    *,
    max_lag: float | None = None,
    n_blocks: int = 5,
) -> dict[str, tuple[float, float]]:
    """D and its standard error (nm^2/ps) of each bead type, from the MSD up to ``max_lag`` ps
    (None: half a block) with error bars over ``n_blocks``. A trajectory too short for a D
    estimate is a one-line error naming ``setting``."""
    runs = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    names = runs[0].type_names or [str(k) for k in range(int(runs[0].types.max()) + 1)]
    found = {}
    for name in names:
        try:
            result = MSD(species=name, max_lag=max_lag).run(runs, n_blocks=n_blocks)
        except NotComputableError as error:
            raise ValueError(f"no diffusion coefficient of {name}: {error}; {setting}") from None
        found[name] = (float(result.attrs["D"]), float(result.attrs.get("D_err", 0.0)))
    return found


def fit_friction(
    frictions: Sequence[float], diffusion: Sequence[float], reference: float, *, local: bool = False
) -> FrictionFit:
    """The friction (1/ps) at which the line through (gamma, 1/D) reaches 1/``reference``:
    least squares over the runs at ``frictions`` with coefficients ``diffusion``, or with
    ``local`` the secant through the two runs whose 1/D is nearest the target (a refinement
    step). A secant whose slope is not within half to twice the least-squares slope is
    noise (two runs at nearly the same D): the step then takes the least-squares slope
    through the run nearest the target. A reference faster than
    the fit allows at zero friction gives 0 (``clipped``)."""
    gammas = np.asarray(frictions, dtype=float)
    values = np.asarray(diffusion, dtype=float)
    if len(gammas) < 2 or len(set(gammas.tolist())) < 2:
        raise ValueError("a friction fit needs runs at two or more different frictions")
    if np.any(values <= 0) or reference <= 0:
        raise ValueError(f"diffusion coefficients must be positive, got {values} and {reference}")
    slope, intercept = np.polyfit(gammas, 1.0 / values, 1)
    if slope <= 0:
        raise ValueError(
            f"D does not fall with the friction (D {values.round(5).tolist()} nm^2/ps at "
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
