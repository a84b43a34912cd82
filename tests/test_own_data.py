"""Your own trajectory, end to end: topologies without masses, virtual sites, the data's
temperature, and one-line errors for atom-count mismatches and missing forces.

The 4-site water comes from OpenMM (TIP4P-Ew, Langevin at 300 K) and is written as GROMACS
writes it: a .gro without masses and a .trr with forces and velocities, the virtual site M
massless with zero force (GROMACS spreads its force onto O, H1 and H2 before writing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import MDAnalysis
import numpy as np
import openmm
import pytest
import yaml
from formats import (
    FORMATS,
    dimensions,
    empty_universe,
    make_frames,
    write_topology_pdb,
    write_trr,
)
from MDAnalysis.coordinates.memory import MemoryReader
from openmm import app, unit

from cgkd.io.checks import TrajectoryError
from cgkd.io.h5md import read_h5md, read_h5md_config
from cgkd.io.trajectory import import_trajectory, load_trajectory
from cgkd.mapping.apply import map_trajectory
from cgkd.mapping.definition import MappingError, MappingSpec
from cgkd.units import KB_KJ_PER_MOL_K

ROOT = Path(__file__).resolve().parent.parent
MOLECULE_COM = MappingSpec.from_config(
    yaml.safe_load((ROOT / "conf" / "mapping" / "molecule_com.yaml").read_text())
)
GROMACS_NAMES = {"O": "OW", "H1": "HW1", "H2": "HW2", "M": "MW"}


def write_gromacs_like(
    path: Path,
    names: list[str],
    resnames: list[str],
    positions: np.ndarray,
    box: np.ndarray,
    *,
    forces: np.ndarray,
    velocities: np.ndarray | None = None,
    atoms_per_residue: int,
) -> tuple[Path, Path]:
    """``path``.gro (names, no masses) and ``path``.trr (forces, optional velocities) written
    by MDAnalysis from [T, N, 3] arrays in nm, kJ/mol/nm, nm/ps and a [3, 3] box in nm."""
    n_frames, n_atoms, _ = positions.shape
    n_residues = n_atoms // atoms_per_residue
    universe = empty_universe(n_atoms, atoms_per_residue)
    universe.add_TopologyAttr("names", names)
    universe.add_TopologyAttr("resnames", resnames)
    universe.add_TopologyAttr("resids", np.arange(1, n_residues + 1))
    universe.atoms.positions = positions[0] * 10.0
    universe.dimensions = dimensions(box)
    universe.atoms.write(str(path.with_suffix(".gro")))
    universe.load_new(
        (positions * 10.0).astype(np.float32),
        format=MemoryReader,
        order="fac",
        dimensions=np.tile(dimensions(box), (n_frames, 1)),
        forces=(forces / 10.0).astype(np.float32),
        velocities=None if velocities is None else (velocities * 10.0).astype(np.float32),
    )
    with MDAnalysis.Writer(str(path.with_suffix(".trr")), n_atoms=n_atoms) as writer:
        for ts in universe.trajectory:
            ts.time = 0.1 * ts.frame
            writer.write(universe.atoms)
    return path.with_suffix(".gro"), path.with_suffix(".trr")


def record(
    context: openmm.Context, integrator: openmm.Integrator, *, n_frames: int, interval: int
) -> dict[str, np.ndarray]:
    """``n_frames`` frames ``interval`` steps apart: positions (nm), forces (kJ/mol/nm) and
    velocities (nm/ps), each [T, N, 3]."""
    frames: dict[str, list] = {"positions": [], "forces": [], "velocities": []}
    for _ in range(n_frames):
        integrator.step(interval)
        state = context.getState(getPositions=True, getForces=True, getVelocities=True)
        frames["positions"].append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        frames["forces"].append(
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
        frames["velocities"].append(
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        )
    return {name: np.array(values) for name, values in frames.items()}


@pytest.fixture(scope="module")
def tip4p(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """10 frames, 0.1 ps apart, of about 100 TIP4P-Ew waters at 300 K, as .gro + .trr, with
    the true values (nm, kJ/mol/nm, nm/ps) and the system's constraint count."""
    forcefield = app.ForceField("amber14/tip4pew.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip4pew", boxSize=openmm.Vec3(1.5, 1.5, 1.5))
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.7, rigidWater=True
    )
    integrator = openmm.LangevinMiddleIntegrator(300, 5.0, 0.002)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300, 1)
    integrator.step(1000)
    data = record(context, integrator, n_frames=10, interval=50)
    virtual = np.array([system.isVirtualSite(i) for i in range(system.getNumParticles())])
    data["forces"][:, virtual] = 0.0  # as GROMACS writes them: spread onto O, H1, H2
    box = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    atoms = list(modeller.topology.atoms())
    gro, trr = write_gromacs_like(
        tmp_path_factory.mktemp("tip4p") / "water",
        [GROMACS_NAMES[atom.name] for atom in atoms],
        ["SOL"] * (len(atoms) // 4),
        data["positions"],
        box,
        forces=data["forces"],
        velocities=data["velocities"],
        atoms_per_residue=4,
    )
    masses = np.array(
        [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(len(atoms))]
    )
    return {
        **data,
        "gro": gro,
        "trr": trr,
        "virtual": virtual,
        "masses": masses,
        "n_constraints": system.getNumConstraints(),
    }


def test_gro_without_masses_and_virtual_sites_maps_with_the_default_map(tip4p, tmp_path):
    """Masses guessed from the .gro's names, M sites found (massless, force-free) and left out
    of every bead and of the constraints: the default map is one bead per water, not refused
    for M-O 'constraints' crossing beads."""
    imported = import_trajectory(tip4p["gro"], tip4p["trr"], tmp_path / "aa.h5md", progress=False)
    aa = read_h5md(imported.path)
    np.testing.assert_allclose(aa.masses, tip4p["masses"], atol=2e-3)  # O 15.999, H 1.008, M 0
    n_sites = int(tip4p["virtual"].sum())
    masses = read_h5md_config(imported.path)["source"]["masses"]
    assert masses == {"source": "guessed", "set": {}, "virtual_sites": n_sites, "unknown": []}

    mapped = map_trajectory(tip4p["gro"], imported.path, tmp_path / "cg.h5md", MOLECULE_COM)
    assert f"virtual sites (massless, force-free; in no bead): {n_sites}" in mapped.summary
    cg = read_h5md(mapped.path)
    assert cg.n_particles == n_sites
    np.testing.assert_allclose(cg.masses, 18.015, atol=1e-3)
    real = aa.forces.reshape(aa.n_frames, n_sites, 4, 3)[:, :, :3]
    np.testing.assert_allclose(cg.forces, real.sum(axis=2), atol=1e-3)
    config = read_h5md_config(mapped.path)
    assert config["virtual_sites"] == n_sites
    assert config["constraints"] == {"source": "detected", "count": tip4p["n_constraints"]}


def test_temperature_of_the_data_comes_from_their_velocities(tip4p, tmp_path):
    """3 (atoms with mass) - constraints - 3 degrees of freedom, as OpenMM counts them: the
    estimate equals the kinetic temperature of the saved velocities, near the thermostat's."""
    real = ~tip4p["virtual"]
    n_dof = 3 * int(real.sum()) - tip4p["n_constraints"] - 3
    twice_kinetic = np.einsum("i,tij,tij->t", tip4p["masses"], *[tip4p["velocities"]] * 2)
    expected = twice_kinetic.mean() / (KB_KJ_PER_MOL_K * n_dof)
    imported = import_trajectory(tip4p["gro"], tip4p["trr"], tmp_path / "aa.h5md", progress=False)
    # Guessed masses (O 15.999, H 1.008) differ from OpenMM's by 3e-5; a degree of freedom
    # more or less would be 2e-3.
    assert imported.temperature == pytest.approx(expected, rel=1e-4)
    assert 270 < imported.temperature < 330  # 10 frames of ~600 degrees of freedom at 300 K
    assert (
        f"- {tip4p['n_constraints']} constraints - 3 = {n_dof} degrees" in imported.temperature_from
    )
    recorded = read_h5md_config(imported.path)["source"]["temperature"]
    assert recorded == {"value": imported.temperature, "from": imported.temperature_from}

    with pytest.warns(UserWarning, match=r"input.temperature=400 K, but the velocities .* say"):
        stated = import_trajectory(
            tip4p["gro"], tip4p["trr"], tmp_path / "b.h5md", temperature=400, progress=False
        )
    assert (stated.temperature, stated.temperature_from) == (400, "input.temperature")


def test_missing_temperature_is_one_line_naming_the_setting(tmp_path):
    frames = make_frames(n_frames=3, n_atoms=9)
    topology = write_topology_pdb(tmp_path / "top.pdb", frames)
    trajectory = write_trr(tmp_path / "no_velocities.trr", frames)
    out = tmp_path / "aa.h5md"
    without = import_trajectory(topology, trajectory, out, progress=False)
    assert without.temperature is None and "no velocities" in without.temperature_from
    out.unlink()
    with pytest.raises(
        TrajectoryError,
        match=r"no_velocities\.trr has no velocities .*; set input\.temperature=<K>",
    ):
        import_trajectory(topology, trajectory, out, require_temperature=True, progress=False)
    assert not out.exists()  # refused before anything was written
    with pytest.raises(TrajectoryError, match=r"input.temperature=-5 is not a temperature"):
        import_trajectory(topology, trajectory, out, temperature=-5, progress=False)
    stated = import_trajectory(topology, trajectory, out, temperature=310.0, progress=False)
    assert stated.temperature == 310.0


def test_atoms_without_a_mass_are_refused_when_mapped_naming_input_masses(tmp_path):
    """A .gro of a 3-atom 'LIG' whose middle atom Q1 no guesser knows: mapping it is a one-line
    error (with centre-of-geometry weights too); input.masses fixes it."""
    frames = make_frames(n_frames=3, n_atoms=9)
    gro, trr = write_gromacs_like(
        tmp_path / "lig",
        ["C1", "Q1", "H1"] * 3,
        ["LIG"] * 3,
        frames.positions,
        frames.boxes[0],
        forces=frames.forces,
        atoms_per_residue=3,
    )
    imported = import_trajectory(gro, trr, tmp_path / "aa.h5md", temperature=300, progress=False)
    assert read_h5md_config(imported.path)["source"]["masses"]["unknown"] == ["Q1"]
    for weights in ("mass", "geometry"):
        spec = MappingSpec("mine", MOLECULE_COM.beads, weights=weights)
        with pytest.raises(
            MappingError,
            match=r"atom 1 \(Q1 of LIG 1\) of bead 'LIG' has mass 0 amu .* atoms named Q1 have "
            r"no mass; set masses by atom name or type with input\.masses=",
        ):
            map_trajectory(gro, imported.path, tmp_path / "cg.h5md", spec)
        assert not (tmp_path / "cg.h5md").exists()

    fixed = import_trajectory(
        gro, trr, tmp_path / "fixed.h5md", masses={"Q1": 14.007}, temperature=300, progress=False
    )
    assert read_h5md_config(fixed.path)["source"]["masses"]["set"] == {"Q1": 14.007}
    mapped = map_trajectory(gro, fixed.path, tmp_path / "cg.h5md", MOLECULE_COM)
    np.testing.assert_allclose(read_h5md(mapped.path).masses, 12.011 + 14.007 + 1.008)

    with pytest.raises(TrajectoryError, match=r"input.masses names 'Q9', which is no atom name"):
        load_trajectory(gro, trr, masses={"Q9": 1.0})
    with pytest.raises(TrajectoryError, match=r"input.masses.Q1=0 is not a mass; give amu > 0"):
        load_trajectory(gro, trr, masses={"Q1": 0})


@pytest.mark.parametrize("name", ["trr", "netcdf", "h5md", "lammps-real"])
def test_atom_count_mismatch_is_named_in_every_format(tmp_path, name):
    writer, suffix, options = FORMATS[name]
    topology = write_topology_pdb(tmp_path / "top.pdb", make_frames(n_frames=2, n_atoms=12))
    trajectory = writer(tmp_path / f"small{suffix}", make_frames(n_frames=2, n_atoms=9))
    with (
        warnings.catch_warnings(),
        pytest.raises(
            TrajectoryError,
            match=rf"top\.pdb has 12 atoms but trajectory .*small{suffix} has 9; use the topology",
        ),
    ):
        warnings.simplefilter("ignore")  # MDAnalysis's noise about the refused reader
        load_trajectory(topology, trajectory, **options)


def _positions_only(frames, path: Path, format: str, **options) -> Path:
    """``frames`` written by an MDAnalysis writer without forces."""
    universe = MDAnalysis.Universe.empty(frames.n_particles, trajectory=False)
    universe.load_new(
        (frames.positions * 10.0).astype(np.float32),
        format=MemoryReader,
        order="fac",
        dimensions=np.array([dimensions(box) for box in frames.boxes]),
    )
    with MDAnalysis.Writer(str(path), n_atoms=frames.n_particles, format=format, **options) as w:
        for _ in universe.trajectory:
            w.write(universe.atoms)
    return path


def _dump_positions_only(frames, path: Path) -> Path:
    """A LAMMPS dump with ``id type x y z`` columns only."""
    lines = []
    for t in range(frames.n_frames):
        lines += ["ITEM: TIMESTEP", str(t), "ITEM: NUMBER OF ATOMS", str(frames.n_particles)]
        lines.append("ITEM: BOX BOUNDS pp pp pp")
        lines += [f"0.0 {10.0 * frames.boxes[t, k, k]}" for k in range(3)]
        lines.append("ITEM: ATOMS id type x y z")
        lines += [
            f"{i + 1} 1 " + " ".join(f"{10.0 * v:.6f}" for v in frames.positions[t, i])
            for i in range(frames.n_particles)
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


NO_FORCES = {
    "trr": (
        lambda f, p: _positions_only(f, p, "TRR"),
        ".trr",
        {},
        r"GROMACS: set nstfout in the \.mdp",
    ),
    "netcdf": (
        lambda f, p: _positions_only(f, p, "NCDF"),
        ".nc",
        {},
        r"AMBER: set ntwf in the mdin",
    ),
    "lammps": (
        _dump_positions_only,
        ".lammpsdump",
        {"units": "lammps-real", "timestep": 1.0},
        r"LAMMPS: dump custom with fx fy fz columns",
    ),
    "dcd": (
        lambda f, p: _positions_only(f, p, "DCD"),
        ".dcd",
        {},
        r"DCD files cannot hold them; OpenMM: write State\.getForces\(\)",
    ),
}


@pytest.mark.parametrize("name", list(NO_FORCES))
def test_no_forces_says_how_the_engine_writes_them(tmp_path, name):
    writer, suffix, options, fix = NO_FORCES[name]
    frames = make_frames(n_frames=2, n_atoms=6)
    topology = write_topology_pdb(tmp_path / "top.pdb", frames)
    trajectory = writer(frames, tmp_path / f"no_forces{suffix}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's NetCDF, DCD's deprecation notes
        with pytest.raises(TrajectoryError, match=rf"no_forces{suffix} has no forces; {fix}"):
            load_trajectory(topology, trajectory, **options)


CGKD = [sys.executable, "-m", "cgkd.cli"]


def cgkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*CGKD, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def test_cli_your_own_water_with_your_own_mapping_to_priors(tip4p, tmp_path):
    """`cgkd prior` on the .gro + .trr with a mapping from a user config directory: the log
    names that mapping and its beads, the virtual sites are counted, and the prior is fitted
    at the temperature measured from the velocities, not at the built-in water's 300 K."""
    mine = tmp_path / "myconf" / "mapping"
    mine.mkdir(parents=True)
    (mine / "mywater.yaml").write_text(
        "defaults:\n  - molecule_com\n  - _self_\nname: mywater\n"
        'beads:\n  - {name: W, select: "resname SOL", per: residue}\n'
    )
    result = cgkd(
        "prior",
        f"input.topology={tip4p['gro']}",
        f"input.trajectory={tip4p['trr']}",
        f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
        "mapping=mywater",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "mapping mywater [W = 'resname SOL' per residue] (mass weights, basic force map)" in log
    assert "virtual sites (massless, force-free; in no bead): " in log
    imported = next((tmp_path / "cache").glob("import-*"))
    temperature = read_h5md_config(imported / "aa.h5md")["source"]["temperature"]["value"]
    assert 270 < temperature < 330 and temperature != 300.0
    prior = yaml.safe_load(next((tmp_path / "cache").glob("prior-*/config.yaml")).read_text())
    assert prior["reads"]["system.temperature"] == pytest.approx(temperature)


def test_cli_without_a_temperature_stops_with_one_line(tmp_path):
    frames = make_frames(n_frames=2, n_atoms=9)
    write_topology_pdb(tmp_path / "top.pdb", frames)
    write_trr(tmp_path / "run.trr", frames)
    result = cgkd("map", "input.topology=top.pdb", "input.trajectory=run.trr", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "run.trr has no velocities" in last and "set input.temperature=<K>" in last


def test_beads_dry_run_summarizes_the_mapping_without_importing(tip4p, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from cgkd.stages import run_command

    monkeypatch.chdir(tmp_path)
    overrides = [
        f"input.topology={tip4p['gro']}",
        f"input.trajectory={tip4p['trr']}",
        'mapping.beads=[{name: W, select: "resname SOL", per: residue}]',
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = run_command(cfg, "beads")
    n_sites = int(tip4p["virtual"].sum())
    assert summary == {
        "mapping": "molecule_com [W = 'resname SOL' per residue] (mass weights, basic force map)",
        "n_beads": n_sites,
        "type_names": ["W"],
    }
    assert not (tmp_path / "cache").exists()  # nothing imported, nothing mapped


def test_cli_run_of_a_short_argon_trajectory_gives_a_report_about_argon(tmp_path):
    """A new user's simple liquid as GROMACS would write it (a .gro without masses and 1 ps
    of .trr with forces and velocities): Lennard-Jones argon at 90 K goes through `cgkd run`
    to a report named after it, at its own temperature, with no water-only observable."""
    n_side, sigma, epsilon = 5, 0.34, 0.996  # nm, kJ/mol
    edge = n_side * 0.37
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * edge))
    lj = openmm.NonbondedForce()
    lj.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    lj.setCutoffDistance(0.85)
    for _ in range(n_side**3):
        system.addParticle(39.948)
        lj.addParticle(0.0, sigma, epsilon)
    system.addForce(lj)
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    integrator = openmm.LangevinMiddleIntegrator(90, 5.0, 0.005)
    integrator.setRandomNumberSeed(2)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions((grid + 0.5) * 0.37)
    context.setVelocitiesToTemperature(90, 2)
    integrator.step(2000)
    data = record(context, integrator, n_frames=20, interval=10)  # 1 ps
    gro, trr = write_gromacs_like(
        tmp_path / "argon",
        ["AR"] * n_side**3,
        ["AR"] * n_side**3,
        data["positions"],
        np.eye(3) * edge,
        forces=data["forces"],
        velocities=data["velocities"],
        atoms_per_residue=1,
    )
    result = cgkd(
        "run",
        "experiment=quick",
        f"input.topology={gro}",
        f"input.trajectory={trr}",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = next(tmp_path.glob("outputs/*/*/report.md")).read_text()
    assert report.startswith("# cgkd report: argon") and "None" not in report
    outcome = json.loads(next(tmp_path.glob("outputs/*/*/result.json")).read_text())
    assert outcome["system"] == "argon" and outcome["models"]["student"]["stable_fraction"] == 1
    imported = next((tmp_path / "cache").glob("import-*"))
    source = read_h5md_config(imported / "aa.h5md")["source"]
    assert source["masses"]["source"] == "guessed"
    assert 75 < source["temperature"]["value"] < 105  # 90 K, from 125 atoms' velocities
    assert "tetrahedral_jsd" not in outcome["models"]["student"]  # not water: left out
    assert outcome["auto"]["tetrahedral.enabled"] is False
