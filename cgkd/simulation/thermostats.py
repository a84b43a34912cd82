"""Thermostats whose friction depends on the bead type: Langevin with one friction per
particle, its overdamped (Brownian) limit, and dissipative particle dynamics (DPD) with one
friction per pair of types.

A CG model loses the friction of the atoms it averages out, so its dynamics run fast; a
friction per bead type is what matching each type's diffusion to the all-atom one needs.
Langevin damps every bead against a fixed background (momentum is not conserved); DPD damps
the relative velocity of bead pairs within a cutoff, so momentum is conserved and
hydrodynamics survive. Langevin middle integration cannot slow a bead below D = kT dt / (2 m)
whatever its friction (at gamma dt >> 1 each step redraws the velocity, a random walk of
fixed step); Brownian dynamics has no such floor, which the slow dynamics of viscous liquids
(reline) need. Units: K, ps, 1/ps, nm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# isort: off
from cgkd.simulation.system import openmm_seed  # before openmm
import openmm
import openmm.unit as unit

# isort: on

#: kB in kJ/mol/K (OpenMM's value).
_KB = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def named_frictions(
    names: Sequence[str], frictions: Mapping[str, float], default: float
) -> np.ndarray:
    """The friction (1/ps) of each bead type in ``names``: its value in ``frictions``, else
    ``default``. A name in ``frictions`` that is not among ``names`` is an error."""
    unknown = sorted(set(frictions) - set(names))
    if unknown:
        raise ValueError(
            f"simulate.frictions names {unknown}, which are not bead types of this system "
            f"({sorted(set(names))}); use those names"
        )
    return np.array([float(frictions.get(name, default)) for name in names])


def per_particle_langevin(
    temperature: float, frictions: np.ndarray, timestep: float, seed: int = 0
) -> openmm.CustomIntegrator:
    """Langevin middle integration (as OpenMM's ``LangevinMiddleIntegrator``: kick, half
    drift, Ornstein-Uhlenbeck velocity update, half drift) with particle i's friction
    ``frictions[i]`` (1/ps) at ``temperature`` K, ``timestep`` ps."""
    frictions = np.asarray(frictions, dtype=float)
    if np.any(frictions < 0):
        raise ValueError(f"frictions must be >= 0 (1/ps), got {frictions.min()}")
    integrator = openmm.CustomIntegrator(timestep)
    integrator.addGlobalVariable("kT", _KB * temperature)
    integrator.addPerDofVariable("decay", 1.0)  # exp(-gamma dt), per particle
    integrator.addPerDofVariable("noise", 0.0)  # sqrt(1 - decay^2)
    integrator.addPerDofVariable("x1", 0.0)
    integrator.addUpdateContextState()
    integrator.addComputePerDof("v", "v + dt*f/m")
    integrator.addConstrainVelocities()
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("v", "decay*v + noise*sqrt(kT/m)*gaussian")
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "v + (x - x1)/dt")
    decay = np.exp(-frictions * timestep)
    integrator.setPerDofVariableByName("decay", [openmm.Vec3(d, d, d) for d in decay])
    noise = np.sqrt(1.0 - decay**2)
    integrator.setPerDofVariableByName("noise", [openmm.Vec3(s, s, s) for s in noise])
    integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def per_particle_brownian(
    temperature: float, frictions: np.ndarray, timestep: float, seed: int = 0
) -> openmm.CustomIntegrator:
    """Overdamped Langevin (Brownian) dynamics, Euler-Maruyama, with particle i's friction
    ``frictions[i]`` (1/ps, > 0) at ``temperature`` K, ``timestep`` ps: each step moves a bead
    by dt f / (m gamma) plus a Gaussian step of variance 2 kT dt / (m gamma) per coordinate,
    so a free bead diffuses with D = kT / (m gamma) at any friction. Velocities stay zero
    (there are none in this limit), so the kinetic temperature reads 0."""
    frictions = np.asarray(frictions, dtype=float)
    if np.any(frictions <= 0):
        raise ValueError(f"Brownian dynamics needs frictions > 0 (1/ps), got {frictions.min()}")
    integrator = openmm.CustomIntegrator(timestep)
    integrator.addGlobalVariable("kT", _KB * temperature)
    integrator.addPerDofVariable("inverse_friction", 1.0)  # 1/gamma, ps
    integrator.addUpdateContextState()
    integrator.addComputePerDof(
        "x",
        "x + dt*f*inverse_friction/m + sqrt(2*kT*dt*inverse_friction/m)*gaussian",
    )
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "0")
    inverse = 1.0 / frictions
    integrator.setPerDofVariableByName("inverse_friction", [openmm.Vec3(g, g, g) for g in inverse])
    integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def dpd(
    temperature: float,
    frictions: np.ndarray,
    cutoff: float,
    timestep: float,
    types: np.ndarray,
    seed: int = 0,
) -> openmm.DPDIntegrator:
    """OpenMM's DPD integrator at ``temperature`` K with ``timestep`` ps: pair friction
    ``frictions[a, b]`` (1/ps, a symmetric [T, T] matrix) within ``cutoff`` nm for particles
    of types a and b (``types[i]`` in 0..T-1)."""
    frictions = np.asarray(frictions, dtype=float)
    if frictions.ndim != 2 or not np.allclose(frictions, frictions.T) or np.any(frictions < 0):
        raise ValueError("DPD pair frictions must be a symmetric matrix of values >= 0 (1/ps)")
    integrator = openmm.DPDIntegrator(temperature, float(frictions.mean()), cutoff, timestep)
    for particle, kind in enumerate(np.asarray(types, dtype=int)):
        integrator.setParticleType(particle, int(kind))
    for a in range(len(frictions)):
        for b in range(a, len(frictions)):
            integrator.addTypePair(a, b, float(frictions[a, b]), cutoff)
    integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def pair_frictions(type_frictions: np.ndarray) -> np.ndarray:
    """DPD pair frictions from one friction per type: the mean of the two types' (1/ps)."""
    values = np.asarray(type_frictions, dtype=float)
    return 0.5 * (values[:, None] + values[None, :])
