"""Physical constants and unit conversions (OpenMM units: nm, ps, kJ/mol, amu, K).

This is the only module that owns constants; convert at the edges, never inside models.
"""

from __future__ import annotations

#: Boltzmann constant times Avogadro's number, kJ/(mol K).
KB_KJ_PER_MOL_K: float = 0.008314462618

#: Length conversions.
ANGSTROM_PER_NM: float = 10.0
NM_PER_ANGSTROM: float = 0.1

#: Seconds in a day over picoseconds in a nanosecond, for ns/day from ps and wall seconds.
SECONDS_PER_DAY: float = 86400.0

#: Avogadro's number (1/mol): grams per amu is 1 / AVOGADRO, for densities.
AVOGADRO: float = 6.02214076e23

#: Cubic nanometres per cubic centimetre.
NM3_PER_CM3: float = 1e21


def kt(temperature_k: float) -> float:
    """Thermal energy k_B T in kJ/mol at ``temperature_k`` kelvin."""
    return KB_KJ_PER_MOL_K * temperature_k


def ns_per_day(simulated_ps: float, wall_seconds: float) -> float:
    """Simulation speed in ns/day from simulated picoseconds and wall-clock seconds."""
    if wall_seconds <= 0:
        return float("inf")
    return simulated_ps / 1000.0 * SECONDS_PER_DAY / wall_seconds


#: Kilojoules per kilocalorie (thermochemical calorie).
KJ_PER_KCAL: float = 4.184

#: kJ/mol per electronvolt (CODATA 2018 e * N_A / 1000).
KJ_MOL_PER_EV: float = 96.48533212331002

#: Factors from the length, force and time units users' trajectories may use to nm,
#: kJ/mol/nm and ps (the names accepted in ``input.units``).
LENGTH_TO_NM: dict[str, float] = {"nm": 1.0, "angstrom": NM_PER_ANGSTROM}
FORCE_TO_KJ_MOL_NM: dict[str, float] = {
    "kJ/mol/nm": 1.0,
    "kJ/mol/angstrom": ANGSTROM_PER_NM,
    "kcal/mol/angstrom": KJ_PER_KCAL * ANGSTROM_PER_NM,
    "eV/angstrom": KJ_MOL_PER_EV * ANGSTROM_PER_NM,
}
TIME_TO_PS: dict[str, float] = {"fs": 1e-3, "ps": 1.0, "ns": 1e3}

#: Unit systems of common MD engines, for trajectories that do not record their units.
UNIT_PRESETS: dict[str, dict[str, str]] = {
    "gromacs": {"length": "nm", "force": "kJ/mol/nm", "time": "ps"},
    "openmm": {"length": "nm", "force": "kJ/mol/nm", "time": "ps"},
    "amber": {"length": "angstrom", "force": "kcal/mol/angstrom", "time": "ps"},
    "lammps-real": {"length": "angstrom", "force": "kcal/mol/angstrom", "time": "fs"},
    "lammps-metal": {"length": "angstrom", "force": "eV/angstrom", "time": "ps"},
}
