"""Mappings from bead definitions: whole molecules across PBC, centres of mass or geometry,
summed forces, several beads per molecule, validation, and the streamed CG data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from MDAnalysis import Universe
from openmm import app, unit

from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md, read_h5md_config, write_h5md
from cgkd.mapping.apply import LinearMapping, map_trajectory
from cgkd.mapping.definition import (
    WEIGHTS,
    BeadKind,
    MappingError,
    MappingSpec,
    UnmappedAtomsWarning,
    compile_mapping,
)
from cgkd.mapping.force_maps import basic_force_map
from cgkd.mapping.molecules import molecule_labels

MASSES = np.array([16.0, 1.0, 1.0, 16.0, 1.0, 1.0])
L = 2.0  # cubic box edge, nm
COM = MappingSpec("com", (BeadKind("all", "molecule"),))


def map_molecules(universe: Universe, frames: Frames, spec: MappingSpec = COM) -> Frames:
    """``frames`` mapped by ``spec`` with the basic force map."""
    compiled = compile_mapping(spec, universe, frames.masses)
    force_map = basic_force_map(compiled.position_map)
    return LinearMapping(compiled, force_map, "basic", np.zeros((0, 2), dtype=int)).apply(frames)


def water_universe(
    resindex: list[int], resnames: tuple[str, ...] = ("HOH", "HOH"), bonds: bool = False
) -> Universe:
    """A topology of 3-atom molecules; ``resindex`` gives each atom's residue (molecule)."""
    universe = Universe.empty(len(resindex), n_residues=len(resnames), atom_resindex=resindex)
    universe.add_TopologyAttr("resname", list(resnames))
    universe.add_TopologyAttr("resid", list(range(1, len(resnames) + 1)))
    names = {0: "O", 1: "H1", 2: "H2"}
    seen: dict[int, int] = {}
    atom_names = []
    for r in resindex:
        atom_names.append(names[seen.get(r, 0)])
        seen[r] = seen.get(r, 0) + 1
    universe.add_TopologyAttr("name", atom_names)
    if bonds:
        members = [np.flatnonzero(np.array(resindex) == r) for r in range(len(resnames))]
        universe.add_TopologyAttr(
            "bonds", [(m[0], m[1]) for m in members] + [(m[0], m[2]) for m in members]
        )
    return universe


def two_waters() -> Frames:
    """Molecule A inside the box; molecule B split across x (its COM falls just below x = 0)."""
    positions = np.array(
        [
            [1.00, 1.00, 1.00],  # A: O
            [1.10, 1.00, 1.00],  # A: H
            [1.00, 1.10, 1.00],  # A: H
            [0.01, 0.50, 0.50],  # B: O
            [1.90, 0.50, 0.50],  # B: H, whole at x = -0.10
            [1.90, 0.60, 1.95],  # B: H, whole at x = -0.10, z = -0.05
        ]
    )
    forces = np.array(
        [
            [10.0, -2.0, 3.0],
            [-4.0, 1.0, 0.5],
            [1.0, 1.0, -1.5],
            [100.0, 0.0, -50.0],
            [-30.0, 20.0, 5.0],
            [-60.0, -10.0, 40.0],
        ]
    )
    return Frames(
        positions=positions[None],
        forces=forces[None],
        boxes=np.eye(3)[None] * L,
        times=np.array([0.5]),
        masses=MASSES,
        types=np.zeros(6, dtype=np.int64),
        type_names=["HOH"],
    )


def test_two_molecules_by_hand() -> None:
    beads = map_molecules(water_universe([0, 0, 0, 1, 1, 1]), two_waters())
    com_a = np.array([(16 * 1.0 + 1.1 + 1.0) / 18, (16 * 1.0 + 1.0 + 1.1) / 18, 1.0])
    # B whole: x = (16*0.01 - 0.10 - 0.10)/18 = -0.04/18 -> wrapped to L - 0.04/18.
    com_b = np.array([L - 0.04 / 18, (16 * 0.5 + 0.5 + 0.6) / 18, (16 * 0.5 + 0.5 - 0.05) / 18])
    np.testing.assert_allclose(beads.positions[0], [com_a, com_b], atol=1e-12)
    np.testing.assert_allclose(beads.forces[0], [[7.0, 0.0, 2.0], [10.0, 10.0, -5.0]])
    np.testing.assert_allclose(beads.masses, [18.0, 18.0])
    assert beads.type_names == ["HOH"]
    assert beads.types.tolist() == [0, 0]
    np.testing.assert_array_equal(beads.boxes, two_waters().boxes)
    assert beads.times.tolist() == [0.5]


def test_bonds_and_interleaved_atoms_give_the_same_beads() -> None:
    frames = two_waters()
    expected = map_molecules(water_universe([0, 0, 0, 1, 1, 1]), frames)
    bonded = map_molecules(water_universe([0, 0, 0, 1, 1, 1], bonds=True), frames)
    np.testing.assert_allclose(bonded.positions, expected.positions)
    # Interleave the atoms of the two molecules: A0 B0 A1 B1 A2 B2.
    perm = np.array([0, 3, 1, 4, 2, 5])
    shuffled = Frames(
        positions=frames.positions[:, perm],
        forces=frames.forces[:, perm],
        boxes=frames.boxes,
        times=frames.times,
        masses=frames.masses[perm],
        types=frames.types[perm],
        type_names=frames.type_names,
    )
    beads = map_molecules(water_universe([0, 1, 0, 1, 0, 1]), shuffled)
    np.testing.assert_allclose(beads.positions, expected.positions, atol=1e-12)
    np.testing.assert_allclose(beads.forces, expected.forces, atol=1e-12)


def test_triclinic_box_split_molecule() -> None:
    box = np.array([[2.0, 0.0, 0.0], [0.7, 1.8, 0.0], [-0.4, 0.5, 1.9]])
    rng = np.random.default_rng(1)
    whole = np.array([0.05, 0.05, 0.05]) + rng.normal(0.0, 0.08, (3, 3))
    com = MASSES[:3] @ whole / 18.0
    # Scatter the atoms by lattice translations, as a wrapped trajectory would.
    shifted = whole + np.array([[0, 0, 0], [1, -1, 0], [0, 1, 1]]) @ box
    frames = Frames(
        positions=shifted[None],
        forces=np.zeros((1, 3, 3)),
        boxes=box[None],
        times=np.zeros(1),
        masses=MASSES[:3],
        types=np.zeros(3, dtype=np.int64),
        type_names=["HOH"],
    )
    bead = map_molecules(water_universe([0, 0, 0], ("HOH",)), frames).positions[0, 0]
    fractional = np.linalg.solve(box.T, bead)
    assert np.all((fractional >= 0) & (fractional < 1))
    lattice = np.linalg.solve(box.T, bead - com)  # bead = com + integer lattice vector
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-12)


def test_internal_forces_cancel() -> None:
    """Equal and opposite forces within a molecule (e.g. constraint forces) do not change beads."""
    frames = two_waters()
    universe = water_universe([0, 0, 0, 1, 1, 1])
    internal = np.zeros_like(frames.forces)
    for i, j, f in ((0, 1, [300.0, -20.0, 5.0]), (1, 2, [-7.0, 80.0, 1.0]), (3, 5, [1e3, 2e3, 0])):
        internal[0, i] += f
        internal[0, j] -= f
    loaded = frames.select([0])
    loaded.forces = frames.forces + internal
    np.testing.assert_allclose(
        map_molecules(universe, loaded).forces, map_molecules(universe, frames).forces, atol=1e-9
    )


def test_bead_types_and_errors() -> None:
    frames = two_waters()
    universe = water_universe([0, 0, 0, 1, 1, 1], resnames=("SOL", "HOH"))
    beads = map_molecules(universe, frames)
    assert beads.type_names == ["HOH", "SOL"]
    assert beads.types.tolist() == [1, 0]
    single = map_molecules(universe, frames, MappingSpec("cg", (BeadKind("all", "residue", "CG"),)))
    assert single.type_names == ["CG"]
    with pytest.raises(MappingError, match=r"per='bond' is unknown; use one of \["):
        BeadKind("all", "bond")
    with pytest.raises(MappingError, match="topology has 3 atoms but the data have 6"):
        map_molecules(water_universe([0, 0, 0], ("HOH",)), frames)


def test_centre_of_geometry_and_two_beads_per_molecule() -> None:
    frames = two_waters()
    universe = water_universe([0, 0, 0, 1, 1, 1])
    geometry = MappingSpec("cog", (BeadKind("all", "molecule"),), weights="geometry")
    cog = map_molecules(universe, frames, geometry).positions[0, 0]
    np.testing.assert_allclose(cog, [(1.0 + 1.1 + 1.0) / 3, (1.0 + 1.0 + 1.1) / 3, 1.0])
    split = MappingSpec("split", (BeadKind("name O", name="O"), BeadKind("name H1 H2", name="HH")))
    beads = map_molecules(universe, frames, split)
    assert beads.type_names == ["HH", "O"] and beads.types.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(beads.masses, [16.0, 2.0, 16.0, 2.0])
    np.testing.assert_allclose(beads.positions[0, 1], [1.05, 1.05, 1.0], atol=1e-12)
    # B's hydrogens are whole with its oxygen (x = -0.10), wrapped back into the box.
    np.testing.assert_allclose(
        beads.positions[0, 3], [L - 0.10, 0.55, (0.5 - 0.05) / 2], atol=1e-12
    )
    np.testing.assert_allclose(
        beads.forces[0], [[10, -2, 3], [-3, 2, -1], [100, 0, -50], [-90, 10, 45]]
    )


IDENTITY_WATER = MappingSpec(
    "identity_water", (BeadKind("name O", "atom", "O"), BeadKind("name H1 H2", "atom", "H"))
)


def test_identity_mapping_keeps_atoms_masses_forces_and_bonds() -> None:
    """per: atom makes every atom its own bead, ordered like the atoms (beads are sorted by
    their first atom): M is the identity, masses and forces are unchanged, positions are the
    atoms' wrapped into the box, and each water's O-H bonds become its 2 CG bonds."""
    frames = two_waters()
    universe = water_universe([0, 0, 0, 1, 1, 1], bonds=True)
    compiled = compile_mapping(IDENTITY_WATER, universe, frames.masses)
    np.testing.assert_array_equal(compiled.position_map.toarray(), np.eye(6))
    assert compiled.type_names == ["H", "O"] and compiled.types.tolist() == [1, 0, 0, 1, 0, 0]
    np.testing.assert_array_equal(compiled.masses, MASSES)
    assert compiled.bonds.tolist() == [[0, 1], [0, 2], [3, 4], [3, 5]]
    beads = map_molecules(universe, frames, IDENTITY_WATER)
    np.testing.assert_array_equal(beads.forces, frames.forces)
    np.testing.assert_array_equal(beads.masses, frames.masses)
    np.testing.assert_allclose(beads.positions, frames.positions, atol=1e-12)
    # Interleaved molecules (A0 B0 A1 B1 A2 B2): the beads still follow the atoms.
    interleaved = water_universe([0, 1, 0, 1, 0, 1], bonds=True)
    shuffled = compile_mapping(IDENTITY_WATER, interleaved, frames.masses)
    np.testing.assert_array_equal(shuffled.position_map.toarray(), np.eye(6))
    assert shuffled.types.tolist() == [1, 1, 0, 0, 0, 0]
    assert shuffled.bonds.tolist() == [[0, 2], [0, 4], [1, 3], [1, 5]]


def test_identity_water_config_is_the_identity_mapping() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["mapping=identity_water"])
    spec = MappingSpec.from_config(OmegaConf.to_container(cfg.mapping, resolve=True))
    assert (spec.name, spec.beads) == ("identity_water", IDENTITY_WATER.beads)
    assert (spec.weights, spec.force_map, spec.allow_overlap) == ("mass", "basic", False)


def test_mapping_validation_is_one_line() -> None:
    universe = water_universe([0, 0, 0, 1, 1, 1])
    masses = MASSES
    nothing = MappingSpec("m", (BeadKind("name ZZ"),))
    with pytest.raises(MappingError, match="selection 'name ZZ' matches no atoms"):
        compile_mapping(nothing, universe, masses)
    with pytest.raises(MappingError, match="bad selection 'name and or'"):
        compile_mapping(MappingSpec("m", (BeadKind("name and or"),)), universe, masses)
    overlap = (BeadKind("all", "molecule", "M"), BeadKind("name O", name="O"))
    with pytest.raises(MappingError, match=r"atom 0 \(O of HOH 1\) is in 2 beads.*allow_overlap"):
        compile_mapping(MappingSpec("m", overlap), universe, masses)
    shared = compile_mapping(MappingSpec("m", overlap, allow_overlap=True), universe, masses)
    np.testing.assert_allclose(shared.masses, [10.0, 8.0, 10.0, 8.0])  # O's mass split in two
    massless = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    for weights in WEIGHTS:  # centres of geometry need masses too: the beads' masses
        with (
            pytest.warns(UnmappedAtomsWarning),
            pytest.raises(
                MappingError,
                match=r"atom 0 \(O of HOH 1\) of bead 'O' has mass 0 amu and is no virtual "
                r"site .*atoms named O have no mass; set masses .*input\.masses=",
            ),
        ):
            spec = MappingSpec("m", (BeadKind("name O", name="O"),), weights=weights)
            compile_mapping(spec, universe, massless)
    light = np.array([0.1, 0.1, 0.1, 16.0, 1.0, 1.0])
    with pytest.raises(MappingError, match=r"bead 'HOH' \(atoms O, H1, H2\) weighs 0.3 amu"):
        compile_mapping(COM, universe, light)
    with pytest.warns(UnmappedAtomsWarning, match="leaves 4 of 6 atoms unmapped"):
        oxygens = compile_mapping(
            MappingSpec("m", (BeadKind("name O", name="O"),)), universe, masses
        )
    assert oxygens.unmapped.tolist() == [1, 2, 4, 5]
    assert "unmapped atoms: 4" in oxygens.summary()
    with pytest.raises(MappingError, match="per=fragment needs bonds"):
        compile_mapping(MappingSpec("m", (BeadKind("all", "fragment"),)), universe, masses)
    with pytest.raises(MappingError, match=r"mapping\.colour is not a mapping setting"):
        MappingSpec.from_config({"name": "m", "beads": [{"select": "all"}], "colour": 1})
    with pytest.raises(MappingError, match="needs a select: string"):
        MappingSpec.from_config({"name": "m", "beads": [{"per": "residue"}]})
    with pytest.raises(MappingError, match="force_map='best' is unknown; use one of"):
        MappingSpec("m", (BeadKind("all"),), force_map="best")
    with pytest.raises(MappingError, match="weights='charge' is unknown"):
        MappingSpec("m", (BeadKind("all"),), weights="charge")


def test_molecule_labels_follow_bonds_across_residues() -> None:
    universe = water_universe([0, 0, 0, 1, 1, 1], resnames=("A", "B"))
    universe.add_TopologyAttr("bonds", [(2, 3)])  # one molecule of two residues
    assert molecule_labels(universe).tolist() == [0] * 6
    assert map_molecules(universe, two_waters()).type_names == ["A-B"]


def write_two_waters_pdb(path: Path, frames: Frames) -> Path:
    """An OpenMM PDB topology of the two waters (no bonds), at the first frame's positions."""
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(2):
        residue = topology.addResidue("HOH", chain)
        for name, element in (("O", app.element.oxygen), ("H1", app.element.hydrogen)):
            topology.addAtom(name, element, residue)
        topology.addAtom("H2", app.element.hydrogen, residue)
    topology.setPeriodicBoxVectors(np.eye(3) * L * unit.nanometer)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, frames.positions[0] * unit.nanometer, handle)
    return path


@pytest.mark.filterwarnings("ignore:.*has one frame and no constraint record:UserWarning")
def test_map_trajectory_writes_cg_dataset(tmp_path: Path) -> None:
    frames = two_waters()
    pdb = write_two_waters_pdb(tmp_path / "aa.pdb", frames)
    aa = write_h5md(tmp_path / "aa.h5", frames)

    mapped = map_trajectory(pdb, aa, tmp_path / "cg.h5", COM, config={"note": "x"}, chunk_frames=1)
    assert (mapped.n_frames, mapped.n_beads, mapped.type_names) == (frames.n_frames, 2, ["HOH"])
    assert "2 beads of 1 species" in mapped.summary
    stored = read_h5md(mapped.path)
    assert stored.type_names == ["HOH"]
    np.testing.assert_allclose(stored.masses, frames.masses.reshape(2, 3).sum(axis=1))
    expected = map_molecules(water_universe([0, 0, 0, 1, 1, 1]), frames)
    np.testing.assert_allclose(stored.positions, expected.positions, atol=1e-12)
    np.testing.assert_allclose(stored.forces, expected.forces, atol=1e-9)
    config = read_h5md_config(mapped.path)
    assert config["note"] == "x" and config["force_map"] == "basic"
    assert config["constraints"] == {"source": "detected", "count": 0}
    assert config["mapping"] == COM.to_dict() and config["mapping_digest"] == COM.digest
    assert config["bead_names"] == ["HOH", "HOH"]
    matrices = np.load(tmp_path / "mapping.npz")
    assert matrices["force_map_shape"].tolist() == [2, 6]


def test_basic_map_refuses_constraints_across_beads(tmp_path: Path) -> None:
    frames = two_waters()
    pdb = write_two_waters_pdb(tmp_path / "aa.pdb", frames)
    rigid = np.array([[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]])
    aa = write_h5md(tmp_path / "aa.h5", frames, constraints=rigid)
    split = MappingSpec("split", (BeadKind("name O", name="O"), BeadKind("name H1 H2", name="HH")))
    with pytest.raises(
        MappingError,
        match=r"4 constraints join atoms of different beads .*"
        r"use force_map: constraint_aware or optimal",
    ):
        map_trajectory(pdb, aa, tmp_path / "cg.h5", split)
    assert not (tmp_path / "cg.h5").exists()
    # Rigid water is one constraint group: O and H can never be separate beads (their distance
    # is fixed, so no mean force acts along it), whatever the force map.
    aware = MappingSpec("split", split.beads, force_map="constraint_aware")
    with pytest.raises(ValueError, match=r"no force map satisfies W M\^T = I .*merge those beads"):
        map_trajectory(pdb, aa, tmp_path / "cg.h5", aware)
    assert not (tmp_path / "cg.h5").exists()
    one_bead = MappingSpec("com", COM.beads, force_map="constraint_aware")
    mapped = map_trajectory(pdb, aa, tmp_path / "cg.h5", one_bead)
    np.testing.assert_allclose(
        read_h5md(mapped.path).forces[0], frames.forces[0].reshape(2, 3, 3).sum(axis=1), atol=1e-9
    )


def test_constraints_detected_from_constant_distances(tmp_path: Path) -> None:
    """A rigid 3-atom molecule tumbling across the boundary and a vibrating 2-atom one: only
    the rigid molecule's three pairs are constant, so only they are found."""
    from cgkd.io.h5md import H5MDReader
    from cgkd.mapping.constraints import detect_constraints, spread_frames

    rng = np.random.default_rng(3)
    n_frames = 30
    body = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]])
    positions = np.empty((n_frames, 5, 3))
    for t in range(n_frames):
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        positions[t, :3] = body @ rotation.T + rng.uniform(0, L, 3)
        stretch = 0.15 + rng.normal(0, 0.003)
        positions[t, 3] = rng.uniform(0, L, 3)
        positions[t, 4] = positions[t, 3] + [stretch, 0.0, 0.0]
    positions %= L  # wrapped, as trajectories are stored
    frames = Frames(
        positions=positions,
        forces=np.zeros((n_frames, 5, 3)),
        boxes=np.repeat(np.eye(3)[None] * L, n_frames, axis=0),
        times=np.arange(n_frames, dtype=float),
        masses=np.array([16.0, 1.0, 1.0, 12.0, 12.0]),
        types=np.zeros(5, dtype=np.int64),
        type_names=["X"],
    )
    path = write_h5md(tmp_path / "aa.h5", frames)
    with H5MDReader(path) as reader:
        sample = spread_frames(reader)
    molecules = np.array([0, 0, 0, 1, 1])
    found = detect_constraints(sample.positions, sample.boxes, molecules, source=path)
    assert found.tolist() == [[0, 1], [0, 2], [1, 2]]
    # A virtual site rides rigidly with its atoms but is in no constraint.
    excluded = detect_constraints(
        sample.positions, sample.boxes, molecules, source=path, exclude=np.array([2])
    )
    assert excluded.tolist() == [[0, 1]]
