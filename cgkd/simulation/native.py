"""A classical CG model (pair tables and priors, no networks) as a native OpenMM System.

No torch at run time: the pair tables and the repulsion prior are one
``CustomNonbondedForce`` (natural cubic splines through the table's knots: a
``Continuous1DFunction`` for one bead type, a ``Continuous2DFunction`` whose rows are the
type pairs otherwise; the prior eps (sigma_ab / r)^12 S(r) in closed form), bonds and angles
are OpenMM's harmonic forces, and the bonded and 1-3 pairs are exclusions, exactly as
:class:`cgkd.models.potential.CGPotential` evaluates the same model. The System is saved as
OpenMM's XML (``XmlSerializer``), which any OpenMM script loads in one line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import openmm
from torch import Tensor

from cgkd.models.potential import CGPotential


def native_system(
    potential: CGPotential, species: Tensor, masses: np.ndarray, box: np.ndarray
) -> openmm.System:
    """The OpenMM System of a classical ``potential`` for beads of ``species`` [N] with
    ``masses`` [N] (amu) in the periodic ``box`` [3, 3] (nm, rows are box vectors)."""
    if potential.networks or not potential.use_pair_table:
        raise ValueError(
            "only a classical model (a pair table and priors, no networks) runs as a native "
            "OpenMM System; export networks with cgkd.simulation.export"
        )
    types = np.asarray(species, dtype=int)
    system = openmm.System()
    for mass in masses:
        system.addParticle(float(mass))
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.asarray(box)])
    system.addForce(_nonbonded(potential, types))
    priors = potential.priors
    if potential.use_priors and priors.bonds.pairs.shape[0] > 0:
        bonds = openmm.HarmonicBondForce()
        for (i, j), r0, k in zip(
            priors.bonds.pairs.tolist(),
            priors.bonds.r0.tolist(),
            priors.bonds.k.tolist(),
            strict=True,
        ):
            bonds.addBond(i, j, r0, k)
        bonds.setUsesPeriodicBoundaryConditions(True)
        system.addForce(bonds)
    if potential.use_priors and priors.angles.triples.shape[0] > 0:
        angles = openmm.HarmonicAngleForce()
        for (i, j, k), theta0, constant in zip(
            priors.angles.triples.tolist(),
            priors.angles.theta0.tolist(),
            priors.angles.k.tolist(),
            strict=True,
        ):
            angles.addAngle(i, j, k, theta0, constant)
        angles.setUsesPeriodicBoundaryConditions(True)
        system.addForce(angles)
    return system


def _nonbonded(potential: CGPotential, types: np.ndarray) -> openmm.CustomNonbondedForce:
    """Pair tables plus the repulsion prior, with the priors' exclusions."""
    table = potential.pair_table
    n_species = table.n_species
    values = table.values.numpy()  # [pairs, K]
    if n_species == 1:
        terms = ["table(r)"]
        function = openmm.Continuous1DFunction(values[0].tolist(), table.r_min, table.cutoff)
    else:
        index = table.table_of.numpy()
        rows = [values[index[a, b]] for a in range(n_species) for b in range(n_species)]
        terms = [f"table(r, type1 * {n_species} + type2)"]
        function = openmm.Continuous2DFunction(
            table.n_knots,
            n_species * n_species,
            np.asarray(rows).ravel().tolist(),  # values[i + K j] = f(r_i, row j)
            table.r_min,
            table.cutoff,
            0.0,
            float(n_species * n_species - 1),
        )
    definitions = []
    priors = potential.priors
    if potential.use_priors and priors.use_repulsion:
        repulsion = priors.repulsion
        terms.append(f"{repulsion.epsilon!r} * (sigma / r)^12 * cos({0.5 * math.pi!r} * x)^2")
        definitions.append(
            f"x = min(max((r - sigma) / ({repulsion.switch_factor - 1.0!r} * sigma), 0), 1)"
        )
        definitions.append("sigma = sigmas(type1, type2)")
    force = openmm.CustomNonbondedForce("; ".join([" + ".join(terms), *definitions]))
    force.addTabulatedFunction("table", function)
    if definitions:
        sigma = priors.repulsion.sigma.double().numpy()
        force.addTabulatedFunction(
            "sigmas",
            openmm.Discrete2DFunction(n_species, n_species, sigma.ravel().tolist()),
        )
    force.addPerParticleParameter("type")
    for bead_type in types:
        force.addParticle([float(bead_type)])
    for i, j in _exclusions(potential):
        force.addExclusion(i, j)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(potential.cutoff)
    force.setUseLongRangeCorrection(False)
    return force


def _exclusions(potential: CGPotential) -> list[tuple[int, int]]:
    """The bead pairs (i < j) the priors exclude from pair interactions."""
    if not potential.use_priors:
        return []
    n_beads = potential.priors.n_beads
    keys = potential.priors.excluded_keys.tolist()
    return sorted({(min(k // n_beads, k % n_beads), max(k // n_beads, k % n_beads)) for k in keys})


def export_native(
    potential: CGPotential, species: Tensor, masses: np.ndarray, box: np.ndarray, path: Path
) -> Path:
    """Write the :func:`native_system` of ``potential`` as OpenMM XML at ``path`` (atomic)."""
    path = Path(path)
    text = openmm.XmlSerializer.serialize(native_system(potential, species, masses, box))
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path
