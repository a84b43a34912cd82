"""Can a one-bead network force field reach a tetrahedral liquid's order, and what does
label noise cost it? Force matching on the mW model of water (Molinero and Moore, J. Phys.
Chem. B 113, 4008, 2009: one Stillinger-Weber particle per molecule, whose three-body term
makes the liquid tetrahedral), whose forces are exact: no mapping noise. Each reference is
the same mW run read as the user's own data (GRO + TRR), its forces exact or with Gaussian
noise of the size of TIP3P water's mapped-force noise added; with exact forces, a network of
two interaction layers and longer training. The run is kept every 0.1 ps, each view of it
takes every 1 ps (every 0.1 ps: ``Reference(0.1, ...)``).

    python benchmarks/clean_labels.py --seeds 0 [--variants NAME ...] [--set KEY=VALUE ...]

Every variant is one ``cgkd run`` per seed that trains and simulates the baseline (the
student's network, force matched to the file's forces) with ``--steps`` of CG MD; the mean
tetrahedral q shift and the JSD are against the mW run itself. Each run's numbers are kept
in ``<out>/runs.json`` and added to by later calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import openmm
import torch
from openmm import unit
from tqdm import tqdm

from cgkd.simulation.system import torch_force

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cgkd_runs import (
    REPO,
    KeptRuns,
    Run,
    add_run_options,
    held_out_force_rmse,
    mean_row,
    run_and_keep,
    run_cgkd,
    run_directory,
    write_table,
)

#: mW (Molinero and Moore 2009) in OpenMM units: epsilon 6.189 kcal/mol, sigma 2.3925 A.
EPSILON = 6.189 * 4.184  # kJ/mol
SIGMA = 0.23925  # nm
A_CUT, LAMBDA, GAMMA = 1.8, 23.15, 1.2
A_PAIR, B_PAIR = 7.049556277, 0.6022245584
MASS = 18.015  # amu
N_MOLECULES, DENSITY, TEMPERATURE = 300, 0.997, 300.0  # -, g/cm^3, K (as conf/system/water)
TIMESTEP, PRODUCTION, EQUILIBRATION = 0.01, 1000.0, 50.0  # ps (mW's usual 10 fs step)
FINEST = 0.1  # ps between the run's kept frames
#: what the kept mW run was made with: a kept run of other parameters is refused
MW = (EPSILON, SIGMA, A_CUT, LAMBDA, GAMMA, A_PAIR, B_PAIR, MASS)
PARAMETERS = np.array(
    [*MW, N_MOLECULES, DENSITY, TEMPERATURE, TIMESTEP, PRODUCTION, EQUILIBRATION, FINEST]
)

#: TIP3P water's mapped-force noise (kJ/mol/nm per component): the held-out force error of
#: force matching on its one-bead map, which the noise dominates (docs/distillation).
WATER_NOISE = 137.0


@dataclass(frozen=True)
class Reference:
    """One view of the mW run: frames every ``every`` ps, Gaussian noise of ``noise``
    kJ/mol/nm per force component added (0: exact forces)."""

    every: float
    noise: float

    @property
    def stem(self) -> str:
        return f"mw_every{self.every:g}ps_noise{self.noise:g}"


#: training up to 90 epochs, the learning rate halved only after 6 epochs without a new best
PATIENT_90 = (
    "student.train.epochs=90",
    "student.train.early_stopping=12",
    "student.train.lr_patience=6",
)

#: name -> (reference, overrides of the defaults, row label).
VARIANTS = {
    "exact": (Reference(1.0, 0.0), (), "exact forces, frames every 1 ps"),
    "noisy": (
        Reference(1.0, WATER_NOISE),
        (),
        "forces + TIP3P's label noise, frames every 1 ps",
    ),
    "exact_two_interactions": (
        Reference(1.0, 0.0),
        ("student.model.n_interactions=2",),
        "exact forces, 2 interaction layers",
    ),
    "exact_patient_90": (
        Reference(1.0, 0.0),
        PATIENT_90,
        "exact forces, up to 90 epochs, learning rate halved after 6 flat epochs",
    ),
    "noisy_patient_90": (
        Reference(1.0, WATER_NOISE),
        PATIENT_90,
        "forces + TIP3P's label noise, likewise up to 90 epochs",
    ),
}


def mw_system(edge: float, model: Path | None = None) -> openmm.System:
    """The mW model for ``N_MOLECULES`` particles in a cubic box of ``edge`` nm: OpenMM's
    custom forces for the Stillinger-Weber pair and three-body terms, both cut at a*sigma
    (0.43 nm; distances capped just below the cut inside the exponentials, so nothing
    overflows beyond it), or the exported :class:`MWPotential` ``model`` as a TorchForce."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * edge))
    if model is not None:
        for _ in range(N_MOLECULES):
            system.addParticle(MASS)
        system.addForce(torch_force(model))
        return system
    cut = A_CUT * SIGMA
    # OpenMM reads the definitions after an expression in order: each may use later ones
    constants = f"capped=min(r, cut - 1e-6); eps={EPSILON}; sigma={SIGMA}; cut={cut}"
    pair = openmm.CustomNonbondedForce(
        f"{A_PAIR}*eps*({B_PAIR}*(sigma/r)^4 - 1)*exp(sigma/(capped - cut)); {constants}"
    )
    pair.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    pair.setCutoffDistance(cut)
    triplet = openmm.CustomManyParticleForce(
        3,
        f"{LAMBDA}*eps*(cos(angle(p2, p1, p3)) + 1/3)^2"
        f"*exp({GAMMA}*sigma/(c12 - cut))*exp({GAMMA}*sigma/(c13 - cut));"
        "c12=min(distance(p1, p2), cut - 1e-6); c13=min(distance(p1, p3), cut - 1e-6);"
        f"eps={EPSILON}; sigma={SIGMA}; cut={cut}",
    )
    triplet.setPermutationMode(openmm.CustomManyParticleForce.UniqueCentralParticle)
    triplet.setNonbondedMethod(openmm.CustomManyParticleForce.CutoffPeriodic)
    triplet.setCutoffDistance(cut)
    for _ in range(N_MOLECULES):
        system.addParticle(MASS)
        pair.addParticle([])
        triplet.addParticle([])
    system.addForce(pair)
    system.addForce(triplet)
    return system


class MWPotential(torch.nn.Module):
    """mW's energy (kJ/mol) of positions [N, 3] (nm) in a cubic box [3, 3] (nm), for
    openmmtorch. The three-body sum over the angles j-i-k expands into sums over the pairs
    within the cut, sum_(j != k) (u_ij.u_ik + 1/3)^2 g_ij g_ik = |M_i|^2 + 2/3 |v_i|^2 +
    1/9 s_i^2 - 16/9 sum_j g_ij^2 with M_i = sum_j g_ij u_ij u_ij^T, v_i = sum_j g_ij u_ij,
    s_i = sum_j g_ij and g_ij = exp(gamma sigma / (r_ij - a sigma)): exact, and far faster
    than OpenMM's CustomManyParticleForce on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.cut, self.sigma, self.epsilon = A_CUT * SIGMA, SIGMA, EPSILON  # nm, nm, kJ/mol
        self.a_pair, self.b_pair, self.lam, self.gamma = A_PAIR, B_PAIR, LAMBDA, GAMMA

    def forward(self, positions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        cut, sigma, epsilon = self.cut, self.sigma, self.epsilon
        edge = torch.diagonal(box)
        n = positions.shape[0]
        with torch.no_grad():  # which ordered pairs (i, j) lie within the cut
            delta = positions[None, :, :] - positions[:, None, :]
            delta = delta - torch.round(delta / edge) * edge
            near = ((delta**2).sum(-1) < cut**2) & ~torch.eye(n, dtype=torch.bool)
            pairs = torch.nonzero(near)
            i, j = pairs[:, 0], pairs[:, 1]
        delta = positions[j] - positions[i]
        delta = delta - torch.round(delta / edge).detach() * edge
        r = torch.sqrt((delta**2).sum(-1))
        pair = self.a_pair * epsilon * (self.b_pair * (sigma / r) ** 4 - 1)
        pair = pair * torch.exp(sigma / (r - cut))
        g = torch.exp(self.gamma * sigma / (r - cut))
        u = delta / r[:, None]
        m = torch.zeros((n, 3, 3), dtype=r.dtype).index_add(
            0, i, g[:, None, None] * u[:, :, None] * u[:, None, :]
        )
        v = torch.zeros((n, 3), dtype=r.dtype).index_add(0, i, g[:, None] * u)
        s = torch.zeros(n, dtype=r.dtype).index_add(0, i, g)
        g2 = torch.zeros(n, dtype=r.dtype).index_add(0, i, g * g)
        angles = (m**2).sum((1, 2)) + (v**2).sum(1) * 2 / 3 + s**2 / 9 - g2 * 16 / 9
        return 0.5 * pair.sum() + 0.5 * self.lam * epsilon * angles.sum()


def check_against_openmm(model: Path, positions: np.ndarray, edge: float) -> None:
    """Raises unless the exported :class:`MWPotential` gives the energy and forces of
    :func:`mw_system` (OpenMM's own custom forces, Reference platform) at ``positions`` (nm)
    to 1e-4 relative (TorchForce runs in float32): two independent implementations of mW."""
    values = []
    for system in (mw_system(edge), mw_system(edge, model)):
        context = openmm.Context(
            system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        values.append((energy, forces))
    (energy, forces), (torch_energy, torch_forces) = values
    error = max(
        abs(torch_energy - energy) / abs(energy),
        float(np.abs(torch_forces - forces).max() / np.abs(forces).max()),
    )
    if error > 1e-4:
        raise RuntimeError(f"{model}: mW in torch differs from OpenMM's by {error:.1e} (relative)")


def box_edge() -> float:
    """The cubic box edge (nm) of ``N_MOLECULES`` at ``DENSITY``."""
    volume = N_MOLECULES * MASS / (DENSITY * 602.214076)  # nm^3
    return volume ** (1.0 / 3.0)


def simulate_mw(work: Path, threads: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Positions (nm) and exact forces (kJ/mol/nm), [T, N, 3], every ``FINEST`` ps of
    ``PRODUCTION`` ps of mW at ``TEMPERATURE`` after ``EQUILIBRATION`` ps from a lattice
    (Langevin, 1/ps, seed 1; :class:`MWPotential` through openmmtorch); and the box edge
    (nm). Kept in ``work/mw.npz``: every view of the run is of this one run."""
    kept = work / "mw.npz"
    if kept.exists():
        with np.load(kept) as run:
            if not np.array_equal(run["parameters"], PARAMETERS):
                raise ValueError(
                    f"{kept} holds an mW run of other parameters than this script's; "
                    "give --work an empty directory"
                )
            return run["positions"], run["forces"], float(run["edge"])
    for view in (*work.glob("mw_every*.trr"), work / "mw.gro"):  # of another run
        view.unlink(missing_ok=True)
    torch.set_num_threads(threads)
    edge = box_edge()
    model = work / "mw.pt"
    torch.jit.script(MWPotential()).save(str(model))
    n_side = int(np.ceil(N_MOLECULES ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    start = grid[np.random.default_rng(0).permutation(len(grid))[:N_MOLECULES]]
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1.0, TIMESTEP)
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(
        mw_system(edge, model), integrator, platform, {"Threads": str(threads)}
    )
    context.setPositions((start + 0.5) * edge / n_side)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(TEMPERATURE, 1)
    integrator.step(round(EQUILIBRATION / TIMESTEP))
    liquid = context.getState(getPositions=True).getPositions(asNumpy=True)
    check_against_openmm(model, liquid.value_in_unit(unit.nanometer), edge)
    stride = round(FINEST / TIMESTEP)
    positions, forces = [], []
    for _ in tqdm(range(round(PRODUCTION / FINEST)), desc="mW MD", mininterval=30):
        integrator.step(stride)
        state = context.getState(getPositions=True, getForces=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        forces.append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    run = {
        "positions": np.array(positions),
        "forces": np.array(forces),
        "edge": edge,
        "parameters": PARAMETERS,
    }
    np.savez(work / "mw.partial.npz", **run)
    (work / "mw.partial.npz").rename(kept)
    return run["positions"], run["forces"], edge


def write_reference(reference: Reference, work: Path, threads: int) -> Path:
    """The reference as GRO + TRR in ``work`` (written once, kept; the noise drawn with seed
    0), in MDAnalysis's units on the way in; returns the TRR path."""
    trr = work / f"{reference.stem}.trr"
    if trr.exists():
        return trr
    positions, forces, edge = simulate_mw(work, threads)
    stride = round(reference.every / FINEST)
    positions, forces = positions[stride - 1 :: stride], forces[stride - 1 :: stride]
    forces = forces + np.random.default_rng(0).normal(0.0, reference.noise, forces.shape)
    universe = mda.Universe.empty(
        N_MOLECULES, N_MOLECULES, atom_resindex=np.arange(N_MOLECULES), trajectory=True
    )
    universe.add_TopologyAttr("name", ["OW"] * N_MOLECULES)
    universe.add_TopologyAttr("resname", ["HOH"] * N_MOLECULES)
    universe.add_TopologyAttr("resid", np.arange(1, N_MOLECULES + 1))
    universe.dimensions = [edge * 10.0] * 3 + [90.0] * 3
    universe.atoms.positions = positions[0] * 10.0  # A
    if not (work / "mw.gro").exists():  # one topology for every view: the caches keep
        universe.atoms.write(work / "mw.gro")
    partial = trr.with_suffix(".partial.trr")
    with mda.Writer(str(partial), N_MOLECULES) as writer:
        for frame, (x, f) in enumerate(zip(positions, forces, strict=True)):
            ts = universe.trajectory.ts
            ts.positions = x * 10.0  # A
            ts.has_forces = True
            ts.forces = f / 10.0  # kJ/mol/A
            ts.time = (frame + 1) * reference.every  # ps
            ts.frame = frame
            ts.dimensions = [edge * 10.0] * 3 + [90.0] * 3
            writer.write(universe.atoms)
    partial.rename(trr)
    return trr


def own_data(reference: Reference, work: Path) -> tuple[str, ...]:
    """The ``input.*`` overrides that read ``reference`` as the user's own data."""
    return (
        f"input.topology={work / 'mw.gro'}",
        f"input.trajectory={work / (reference.stem + '.trr')}",
        "input.name=mW",
        f"input.masses={{OW: {MASS}}}",
        f"input.temperature={TEMPERATURE}",
    )


def exact_errors(work: Path, kept: KeptRuns, threads: int) -> list[str]:
    """Measures, for each kept run not yet measured, the baseline's held-out force RMSE
    against the exact forces of its test frames (the exact view of the run's frames, mapped
    here first); returns the markdown table of them by variant (mean ± std over seeds)."""
    for entry in kept.entries:
        if "exact_force_rmse" in entry:
            continue
        exact = Reference(VARIANTS[entry["run"]][0].every, 0.0)
        write_reference(exact, work, threads)
        settings = [*own_data(exact, work), f"threads={threads}", "progress=false"]
        run_cgkd(["map", *settings], work, threads, f"the map of {exact.stem}")
        run = run_directory(work, kept, entry["run"], entry["seed"])
        labels = [f"input.trajectory={work / (exact.stem + '.trr')}"]
        entry["exact_force_rmse"] = held_out_force_rmse(work, run, ["baseline"], labels)
    kept.save()
    lines = [
        "",
        "## Held-out force RMSE against the exact forces",
        "",
        "The same test frames of each seed, against mW's exact forces: the model's own error "
        "of the mean force, which noisy labels hide. Mean ± std over the seeds, kJ/mol/nm.",
        "",
        "| variant | seeds | force RMSE vs exact forces |",
        "|---|---:|---:|",
    ]
    for name, (*_, label) in VARIANTS.items():
        values = [e["exact_force_rmse"]["baseline"] for e in kept.entries if e["run"] == name]
        if values:
            lines.append(mean_row(label, values, 2))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=20_000, help="CG MD steps (100 ps at 5 fs)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "distillation" / "clean_labels")
    add_run_options(parser, "clean_labels", [0])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    kept = KeptRuns(args.out / "runs.json", ("seed", "run"))
    for name in args.variants:
        reference, overrides, _ = VARIANTS[name]
        write_reference(reference, args.work, args.threads)
        run = {name: Run(overrides, ("baseline",), args.steps)}
        run_and_keep(
            own_data(reference, args.work), run, args.seeds, args.work, args.threads, args.set, kept
        )
    for entry in kept.entries:
        if "mw_mean_q" not in entry:
            metrics = run_directory(args.work, kept, entry["run"], entry["seed"]) / "metrics.json"
            scalars = json.loads(metrics.read_text())["scalars"]
            entry["mw_mean_q"] = scalars["mean tetrahedral q"]["AA (mapped)"]["value"]
    kept.save()
    labels = {(name, "baseline"): label for name, (*_, label) in VARIANTS.items()}
    seeds = sorted({e["seed"] for e in kept.entries})
    mw_q = sorted({round(e["mw_mean_q"], 4) for e in kept.entries})
    path = write_table(
        kept.entries,
        labels,
        args.out,
        "Force matching on exact and on noisy forces of a one-bead tetrahedral liquid (mW)",
        f"Regenerate: `python benchmarks/clean_labels.py --seeds {' '.join(map(str, seeds))}`. "
        f"Reference: mW, {N_MOLECULES} particles at {DENSITY} g/cm^3 and {TEMPERATURE:g} K, "
        f"{PRODUCTION:g} ps; its mean tetrahedral q: {', '.join(map(str, mw_q))}. "
        f"Noise: Gaussian, {WATER_NOISE:g} kJ/mol/nm per component. "
        "The 'AA' columns are the mW run's.",
    )
    path.write_text(
        path.read_text() + "\n".join(exact_errors(args.work, kept, args.threads)) + "\n"
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
