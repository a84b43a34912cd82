"""The configured set of observables, evaluated the same way on the reference and on CG runs.

``conf/analysis`` names the observables and their settings; :func:`evaluate` runs them on one
trajectory or on independent runs (replicas) and adds the results derived from the RDF
(running coordination number n(r), S(q)). Result keys are the result names: ``rdf``,
``rdf A-B``, ``n(r)``, ``n(r) A-B``, ``S(q)``, ``adf``, ``cdf``, ``tetrahedral``, ``q4``, ``q6``,
``coordination numbers``, ``local density``, ``msd``, ``vacf``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cgkd.observables.adf import ADF, CDF
from cgkd.observables.base import Observable, ObservableResult
from cgkd.observables.dynamics import MSD, VACF
from cgkd.observables.order import CoordinationNumbers, LocalDensity, Steinhardt, TetrahedralOrder
from cgkd.observables.rdf import RDF, coordination_number, species_pairs
from cgkd.observables.structure import structure_factor
from cgkd.observables.trajectory import Trajectory

log = logging.getLogger(__name__)

#: Figure a result goes in, by the start of its name (longest match wins); 2-D maps apart.
FIGURES = {
    "structure": ("rdf", "n(r)", "S(q)"),
    "angles": ("adf",),
    "order": ("tetrahedral", "q", "coordination numbers", "local density"),
    "dynamics": ("msd", "vacf"),
}


def build_observables(settings: Mapping[str, Any], trajectory: Trajectory) -> dict[str, Observable]:
    """The observables switched on in ``settings`` (``conf/analysis``), keyed by result name.

    RDFs are made per species pair as well when the trajectory has more than one species;
    dynamics need the time between frames (``trajectory.dt``), the VACF needs velocities.
    """
    built: list[Observable] = []
    rdf = settings["rdf"]
    built.append(RDF(rdf["r_max"], rdf["n_bins"]))
    pairs = species_pairs(trajectory)
    if rdf.get("species", True) and len(pairs) > 1:
        built += [RDF(rdf["r_max"], rdf["n_bins"], pair=pair) for pair in pairs]
    adf = settings["adf"]
    built.append(ADF(adf["cutoff"], adf["n_bins"]))
    if _enabled(settings, "cdf"):
        cdf = settings["cdf"]
        built.append(
            CDF(cdf["r_max"], cdf["n_r_bins"], cdf["n_angle_bins"], r_min=cdf.get("r_min", 0.0))
        )
    if _enabled(settings, "tetrahedral"):
        built.append(TetrahedralOrder(n_bins=settings["tetrahedral"]["n_bins"]))
    if _enabled(settings, "steinhardt"):
        steinhardt = settings["steinhardt"]
        built += [
            Steinhardt(int(l), steinhardt["cutoff"], n_bins=steinhardt["n_bins"])
            for l in steinhardt["l"]  # noqa: E741 - the spherical-harmonic degree is l
        ]
    if _enabled(settings, "coordination"):
        coordination = settings["coordination"]
        built.append(CoordinationNumbers(coordination["cutoff"], coordination["max_count"]))
    if _enabled(settings, "local_density"):
        local = settings["local_density"]
        built.append(LocalDensity(local["radius"], local["max_count"]))
    if _enabled(settings, "msd"):
        if trajectory.dt is None:
            log.warning("%s: no time between frames known; MSD skipped", trajectory.name)
        else:
            built.append(MSD(max_lag=settings["msd"].get("max_lag")))
            if trajectory.has_velocities:
                built.append(VACF(max_lag=settings["msd"].get("max_lag")))
    return {observable.name: observable for observable in built}


def evaluate(
    settings: Mapping[str, Any],
    runs: Trajectory | Sequence[Trajectory],
    *,
    step: int | None = None,
    progress: bool = False,
) -> dict[str, ObservableResult]:
    """Every configured observable of one trajectory or of independent runs, and the results
    derived from the RDFs (``n(r) ...`` and, for the total RDF, ``S(q)``)."""
    runs = [runs] if isinstance(runs, Trajectory) else list(runs)
    observables = build_observables(settings, runs[0])
    n_blocks = int(settings.get("n_blocks", 5))
    rdf = settings["rdf"]
    results: dict[str, ObservableResult] = {}
    for name, observable in observables.items():
        results[name] = observable.run(runs, step=step, n_blocks=n_blocks, progress=progress)
    for name in [n for n in results if n.startswith("rdf")]:
        derived = coordination_number(results[name])
        results[derived.name] = derived
    if _enabled(settings, "structure_factor"):
        sq = settings["structure_factor"]
        q = np.linspace(2.0 * np.pi / rdf["r_max"], sq["q_max"], sq["n_q"])
        results["S(q)"] = structure_factor(results["rdf"], q)
    return results


def figure_of(name: str) -> str:
    """The figure (a key of FIGURES) that the result ``name`` is drawn in."""
    by_length = sorted(
        ((prefix, figure) for figure, prefixes in FIGURES.items() for prefix in prefixes),
        key=lambda item: -len(item[0]),
    )
    for prefix, figure in by_length:
        if name.startswith(prefix):
            return figure
    raise ValueError(f"no figure for observable {name!r}; add its prefix to FIGURES")


def _enabled(settings: Mapping[str, Any], key: str) -> bool:
    section = settings.get(key)
    return section is not None and bool(section.get("enabled", True))
