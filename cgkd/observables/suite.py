"""The configured set of observables, evaluated the same way on the reference and on CG runs.

``conf/analysis`` names the observables and their settings; :func:`evaluate` runs them on one
trajectory or on independent runs (replicas) and adds the results derived from the RDF
(running coordination number n(r), S(q)). Result keys are the result names: ``rdf``,
``rdf A-B``, ``n(r)``, ``n(r) A-B``, ``S(q)``, ``adf``, ``cdf``, ``tetrahedral``, ``q4``, ``q6``,
``coordination numbers``, ``local density``, ``bonds``, ``bonds A-B``, ``msd``, ``vacf``.

Shell settings may be ``auto``: they follow the first shell of the system, the first minimum
r1 of its total g(r) (:func:`cgkd.observables.rdf.first_minimum`), see :func:`resolve_auto`.
Evaluate the reference first and pass its ``Analysis.settings`` on to the CG runs, so that
every source is measured with the same numbers. An observable the data cannot give
(:class:`~cgkd.observables.base.NotComputableError`) is skipped, with the reason.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cgkd.observables.adf import ADF, CDF
from cgkd.observables.base import NotComputableError, Observable, ObservableResult
from cgkd.observables.bonds import build_bond_lengths
from cgkd.observables.dynamics import MSD, VACF
from cgkd.observables.order import CoordinationNumbers, LocalDensity, Steinhardt, TetrahedralOrder
from cgkd.observables.rdf import (
    RDF,
    coordination_number,
    first_minimum,
    rdf_onset,
    species_pairs,
)
from cgkd.observables.structure import structure_factor
from cgkd.observables.trajectory import Trajectory

#: The value of a setting that follows the system (see :func:`resolve_auto`).
AUTO = "auto"
#: ``tetrahedral.enabled: auto`` is on for one bead species with at most this many beads
#: within r1 on average: tetrahedral networks hold 4-5 (water models up to about 8, TIP3P's
#: shallow minimum included), simple liquids 10-13 (Lennard-Jones near its triple point 12).
TETRAHEDRAL_MAX_COORDINATION = 9.0
#: ``local_density.radius: auto`` is this many first-shell radii r1 (0.5 nm for r1 = 0.33 nm).
LOCAL_DENSITY_SHELLS = 1.5
#: ``max_count: auto`` is this many times the mean count (density x sphere volume), rounded up.
COUNT_MARGIN = 2.0
#: The section of conf/analysis that sets each result, by the start of its name.
SECTIONS = {
    "rdf": "rdf",
    "S(q)": "structure_factor",
    "adf": "adf",
    "cdf": "cdf",
    "tetrahedral": "tetrahedral",
    "q": "steinhardt",
    "coordination numbers": "coordination",
    "local density": "local_density",
    "bonds": "bonds",
    "msd": "msd",
    "vacf": "msd",
}

#: Figure a result goes in, by the start of its name (longest match wins); 2-D maps apart.
FIGURES = {
    "structure": ("rdf", "n(r)", "S(q)"),
    "angles": ("adf",),
    "order": ("tetrahedral", "q", "coordination numbers", "local density"),
    "bonds": ("bonds",),
    "dynamics": ("msd", "vacf"),
}


@dataclass
class Analysis:
    """What :func:`evaluate` made of one source.

    ``results``: the results by name; ``settings``: the settings it ran with, every ``auto``
    replaced by its value (pass them on to evaluate the other sources alike); ``shell``: the
    source's first shell (:func:`first_shell`); ``auto``: the settings it resolved here,
    ``"section.key"`` -> value; ``skipped``: result name -> why it was not computed, naming the
    setting to change.
    """

    results: dict[str, ObservableResult]
    settings: dict[str, Any]
    shell: dict[str, Any]
    auto: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def build_rdfs(settings: Mapping[str, Any], trajectory: Trajectory) -> dict[str, RDF]:
    """The total RDF and, for more than one species (and ``rdf.species``), one per pair."""
    rdf = settings["rdf"]
    built = [RDF(rdf["r_max"], rdf["n_bins"])]
    pairs = species_pairs(trajectory)
    if rdf.get("species", True) and len(pairs) > 1:
        built += [RDF(rdf["r_max"], rdf["n_bins"], pair=pair) for pair in pairs]
    return {observable.name: observable for observable in built}


def build_observables(
    settings: Mapping[str, Any], trajectory: Trajectory
) -> tuple[dict[str, Observable], dict[str, str]]:
    """The observables besides the RDFs switched on in ``settings`` (``conf/analysis``, every
    ``auto`` resolved), keyed by result name, and those that cannot be built, with the reason.

    Dynamics need the time between frames (``trajectory.dt``), the VACF needs velocities; a
    system of several bead types gets an MSD (and D) of each type besides the total's; bond
    lengths need bonds (``trajectory.bonds``).
    """
    unresolved = [
        f"analysis.{section}.{key}"
        for section, values in settings.items()
        if isinstance(values, Mapping) and _enabled(settings, section)
        for key, value in values.items()
        if value == AUTO
    ]
    if unresolved:
        raise ValueError(f"{', '.join(unresolved)}: auto is not resolved; use resolve_auto first")
    built: list[Observable] = []
    skipped: dict[str, str] = {}
    if _enabled(settings, "adf"):
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
    if _enabled(settings, "bonds"):
        bonds = settings["bonds"]
        built += build_bond_lengths(bonds["r_max"], bonds["n_bins"], trajectory)
    if _enabled(settings, "msd"):
        msd = settings["msd"]
        if trajectory.dt is None:
            skipped["msd"] = (
                f"{trajectory.name}: no time between frames known (frame times missing or "
                "uneven); give the trajectory equally spaced frame times"
            )
        else:
            # all beads, then each bead type of a system of several (its own D ratio)
            kinds = trajectory.type_names if len(trajectory.type_names) > 1 else ()
            built += [
                MSD(
                    species=kind,
                    max_lag=msd.get("max_lag"),
                    fit_start=msd.get("fit_start"),
                    fit_stop=msd.get("fit_stop"),
                )
                for kind in (None, *kinds)
            ]
            if trajectory.has_velocities:
                built.append(VACF(max_lag=msd.get("max_lag")))
    return {observable.name: observable for observable in built}, skipped


def first_shell(results: Mapping[str, ObservableResult], n_species: int) -> dict[str, Any]:
    """The first coordination shell seen in the RDF ``results`` of a system of ``n_species``.

    ``radius``: r1 (nm), the first minimum of the total g(r), or None (``problem`` says why);
    ``coordination``: the mean number of beads within r1 (n(r1)); ``onset``: the lower edge
    (nm) of the first bin where the total g(r) exceeds 0.01; ``density``: beads per nm^3;
    ``pairs``: the first minimum (nm, or None) of each species-pair g(r), by result name.
    """
    shell: dict[str, Any] = {
        "radius": None,
        "problem": None,
        "coordination": None,
        "onset": None,
        "density": None,
        "n_species": int(n_species),
        "pairs": {},
    }
    for name, result in results.items():
        if not name.startswith("rdf "):
            continue
        try:
            shell["pairs"][name] = first_minimum(result)
        except NotComputableError:
            shell["pairs"][name] = None
    total = results.get("rdf")
    if total is None:
        shell["problem"] = "the total RDF was not computed"
        return shell
    shell["density"] = total.attrs["density"]
    try:
        shell["onset"] = rdf_onset(total) - 0.5 * (total.x[1] - total.x[0])
        radius = first_minimum(total)
    except ValueError as error:
        shell["problem"] = f"{error} (settings: analysis.rdf)"
        return shell
    n = coordination_number(total)
    shell["radius"] = radius
    shell["coordination"] = float(np.interp(radius, n.x, n.y))
    return shell


def resolve_auto(
    settings: Mapping[str, Any], shell: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """``settings`` with every ``auto`` replaced, following the ``shell`` (:func:`first_shell`).

    With r1 the first minimum of the total g(r): ``adf.cutoff``, ``cdf.r_max``,
    ``steinhardt.cutoff`` and ``coordination.cutoff`` are r1; ``cdf.r_min`` is the onset of
    g(r) (0 when that is not below r_max); ``local_density.radius`` is
    :data:`LOCAL_DENSITY_SHELLS` r1; a ``max_count`` is :data:`COUNT_MARGIN` times the mean
    number of beads in its sphere, rounded up; ``tetrahedral.enabled`` is true for one
    species with at most :data:`TETRAHEDRAL_MAX_COORDINATION` beads within r1. Returns the
    settings, the values resolved (``"section.key"`` -> value) and the observables left out
    because their ``auto`` has no value (result name -> reason); their sections are disabled.
    """
    resolved = copy.deepcopy(dict(settings))
    auto: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def first_radius(_: dict[str, Any]) -> float:
        if shell["radius"] is None:
            raise NotComputableError(f"needs the first minimum r1 of g(r): {shell['problem']}")
        return shell["radius"]

    def onset(section: dict[str, Any]) -> float:
        if shell["onset"] is None:
            raise NotComputableError(f"needs the onset of g(r): {shell['problem']}")
        return shell["onset"] if shell["onset"] < section["r_max"] else 0.0

    def count(key: str) -> Callable[[dict[str, Any]], int]:
        def rule(section: dict[str, Any]) -> int:
            if shell["density"] is None:
                raise NotComputableError(f"needs the bead density: {shell['problem']}")
            volume = 4.0 / 3.0 * np.pi * float(section[key]) ** 3
            return max(1, math.ceil(COUNT_MARGIN * shell["density"] * volume))

        return rule

    rules: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("adf", "cutoff", first_radius),
        ("cdf", "r_max", first_radius),
        ("cdf", "r_min", onset),
        ("steinhardt", "cutoff", first_radius),
        ("coordination", "cutoff", first_radius),
        ("coordination", "max_count", count("cutoff")),
        ("local_density", "radius", lambda s: LOCAL_DENSITY_SHELLS * first_radius(s)),
        ("local_density", "max_count", count("radius")),
    ]
    for section, key, rule in rules:
        values = resolved.get(section)
        if values is None or values.get(key) != AUTO or not _enabled(resolved, section):
            continue
        try:
            values[key] = rule(values)
            auto[f"{section}.{key}"] = values[key]
        except NotComputableError as error:
            values["enabled"] = False
            for name in _result_names(section, values):
                skipped[name] = f"{section}.{key}: auto {error}; set analysis.{section}.{key}"
    tetrahedral = resolved.get("tetrahedral")
    if tetrahedral is not None and tetrahedral.get("enabled") == AUTO:
        coordination = shell["coordination"]
        tetrahedral["enabled"] = bool(
            shell["n_species"] == 1
            and coordination is not None
            and coordination <= TETRAHEDRAL_MAX_COORDINATION
        )
        auto["tetrahedral.enabled"] = tetrahedral["enabled"]
    return resolved, auto, skipped


def evaluate(
    settings: Mapping[str, Any],
    runs: Trajectory | Sequence[Trajectory],
    *,
    step: int | None = None,
    progress: bool = False,
) -> Analysis:
    """Every configured observable of one trajectory or of independent runs, and the results
    derived from the RDFs (``n(r) ...`` and, for the total RDF, ``S(q)``).

    ``auto`` settings are resolved from these runs' own RDFs; observables the data cannot give
    are skipped with the reason instead of raising.
    """
    runs = [runs] if isinstance(runs, Trajectory) else list(runs)
    n_blocks = int(settings.get("n_blocks", 5))
    results: dict[str, ObservableResult] = {}
    skipped: dict[str, str] = {}

    def run(observables: Mapping[str, Observable]) -> None:
        for name, observable in observables.items():
            try:
                results[name] = observable.run(
                    runs, step=step, n_blocks=n_blocks, progress=progress
                )
            except NotComputableError as error:
                skipped[name] = f"{error} (settings: analysis.{section_of(name)})"

    run(build_rdfs(settings, runs[0]))
    for name in [n for n in results if n.startswith("rdf")]:
        derived = coordination_number(results[name])
        results[derived.name] = derived
    shell = first_shell(results, len(np.unique(runs[0].types)))
    resolved, auto, unresolved = resolve_auto(settings, shell)
    skipped.update(unresolved)
    observables, not_built = build_observables(resolved, runs[0])
    skipped.update(not_built)
    run(observables)
    if _enabled(settings, "structure_factor"):
        if "rdf" in results:
            sq = settings["structure_factor"]
            q = np.linspace(2.0 * np.pi / settings["rdf"]["r_max"], sq["q_max"], sq["n_q"])
            results["S(q)"] = structure_factor(results["rdf"], q)
        else:
            skipped["S(q)"] = f"needs the total RDF: {skipped['rdf']}"
    return Analysis(results, resolved, shell, auto, skipped)


def section_of(name: str) -> str:
    """The section of conf/analysis whose settings make the result ``name``."""
    return _longest_prefix(name, SECTIONS)


def figure_of(name: str) -> str:
    """The figure (a key of FIGURES) that the result ``name`` is drawn in."""
    prefixes = {prefix: figure for figure, group in FIGURES.items() for prefix in group}
    return _longest_prefix(name, prefixes)


def _longest_prefix(name: str, by_prefix: Mapping[str, str]) -> str:
    """The value of the longest key of ``by_prefix`` that ``name`` starts with."""
    for prefix in sorted(by_prefix, key=len, reverse=True):
        if name.startswith(prefix):
            return by_prefix[prefix]
    raise ValueError(f"no entry for observable {name!r}; add its prefix to {list(by_prefix)}")


def _result_names(section: str, values: Mapping[str, Any]) -> list[str]:
    """The results that the section ``section`` of conf/analysis (its ``values``) makes."""
    if section == "steinhardt":
        return [f"q{int(l)}" for l in values["l"]]  # noqa: E741
    return [name for name, owner in SECTIONS.items() if owner == section]


def _enabled(settings: Mapping[str, Any], key: str) -> bool:
    """Whether the section ``key`` is present and not switched off (``auto`` counts as on)."""
    section = settings.get(key)
    if section is None:
        return False
    enabled = section.get("enabled", True)
    return enabled == AUTO or bool(enabled)
