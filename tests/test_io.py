"""Frames, H5MD files (ours and as MDAnalysis reads them) and trajectory loading."""

from __future__ import annotations

from pathlib import Path

import h5py
import MDAnalysis
import numpy as np
import pytest
from openmm import app, unit

from cgkd.io.atomic import atomic_path
from cgkd.io.checks import TrajectoryError
from cgkd.io.frames import Frames
from cgkd.io.h5md import (
    H5MDError,
    read_h5md,
    read_h5md_config,
    read_h5md_constraints,
    write_h5md,
)
from cgkd.io.trajectory import FrameSelection, load_trajectory

# Triclinic box (rows a, b, c in nm) in MDAnalysis's canonical orientation (a along x, b in xy).
BOX = np.array([[2.0, 0.0, 0.0], [0.3, 2.2, 0.0], [0.1, 0.2, 2.5]])


def water_frames(n_molecules: int = 2, n_frames: int = 4, seed: int = 0) -> Frames:
    """Random frames of ``n_molecules`` waters (O, H, H masses, one species "HOH")."""
    rng = np.random.default_rng(seed)
    n_atoms = 3 * n_molecules
    return Frames(
        positions=rng.uniform(0.0, 2.0, (n_frames, n_atoms, 3)),
        forces=rng.normal(0.0, 500.0, (n_frames, n_atoms, 3)),
        boxes=np.repeat(BOX[None], n_frames, axis=0),
        times=0.2 * np.arange(1, n_frames + 1),
        masses=np.tile([15.99943, 1.007947, 1.007947], n_molecules),
        types=np.zeros(n_atoms, dtype=np.int64),
        type_names=["HOH"],
    )


def write_water_pdb(path: Path, n_molecules: int, positions_nm: np.ndarray) -> Path:
    """A PDB topology of ``n_molecules`` waters written by OpenMM."""
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(n_molecules):
        residue = topology.addResidue("HOH", chain)
        oxygen = topology.addAtom("O", app.element.oxygen, residue)
        for name in ("H1", "H2"):
            topology.addBond(oxygen, topology.addAtom(name, app.element.hydrogen, residue))
    topology.setPeriodicBoxVectors(BOX * unit.nanometer)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions_nm * unit.nanometer, handle)
    return path


def test_frames_validates_shapes_and_selects() -> None:
    frames = water_frames(n_frames=5)
    assert (frames.n_frames, frames.n_particles) == (5, 6)
    picked = frames.select([0, 3])
    assert picked.n_frames == 2
    np.testing.assert_array_equal(picked.positions[1], frames.positions[3])
    assert frames.select(slice(1, None, 2)).times.tolist() == frames.times[1::2].tolist()
    with pytest.raises(ValueError, match="forces must have shape"):
        Frames(
            positions=frames.positions,
            forces=frames.forces[:, :5],
            boxes=frames.boxes,
            times=frames.times,
            masses=frames.masses,
            types=frames.types,
            type_names=["HOH"],
        )
    with pytest.raises(ValueError, match="index type_names"):
        Frames(
            positions=frames.positions,
            forces=frames.forces,
            boxes=frames.boxes,
            times=frames.times,
            masses=frames.masses,
            types=frames.types + 1,
            type_names=["HOH"],
        )
    with pytest.raises(ValueError, match="cannot select"):
        frames.select([7])


def test_h5md_round_trip(tmp_path: Path) -> None:
    frames = water_frames()
    config = {"seed": 3, "path": Path("x/y"), "nested": {"values": np.arange(2)}}
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    path = write_h5md(
        tmp_path / "aa.h5", frames, config=config, steps=np.arange(4) * 100, constraints=pairs
    )
    back = read_h5md(path)
    for name in ("positions", "forces", "boxes", "times", "masses", "types"):
        np.testing.assert_array_equal(getattr(back, name), getattr(frames, name))
    assert back.type_names == ["HOH"]
    assert read_h5md_config(path) == {"seed": 3, "path": "x/y", "nested": {"values": [0, 1]}}
    np.testing.assert_array_equal(read_h5md_constraints(path), pairs)
    with h5py.File(path) as f:
        assert list(f["h5md"].attrs["version"]) == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "cgkd"
        assert list(f["particles"]) == ["all"]
        assert f["particles/all/force/value"].attrs["unit"] == "kJ mol-1 nm-1"
        assert f["particles/all/position/time"].attrs["unit"] == "ps"
        assert list(f["particles/all/position/step"][()]) == [0, 100, 200, 300]
        assert f[f["connectivity/constraints"].attrs["particles_group"]].name == "/particles/all"
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_mdanalysis_reads_our_h5md_with_forces(tmp_path: Path) -> None:
    frames = water_frames()
    pdb = write_water_pdb(tmp_path / "top.pdb", 2, frames.positions[0])
    # MDAnalysis picks the H5MD reader from the .h5md suffix; for .h5 it needs format="H5MD".
    for name, kwargs in (("aa.h5md", {}), ("aa.h5", {"format": "H5MD"})):
        path = write_h5md(tmp_path / name, frames)
        universe = MDAnalysis.Universe(str(pdb), str(path), **kwargs)
        assert universe.trajectory.n_frames == frames.n_frames
        for i, ts in enumerate(universe.trajectory):
            # MDAnalysis units: Angstrom and kJ/(mol Angstrom); it stores float32.
            np.testing.assert_allclose(ts.positions / 10.0, frames.positions[i], atol=1e-6)
            np.testing.assert_allclose(ts.forces * 10.0, frames.forces[i], rtol=1e-6, atol=1e-3)
            np.testing.assert_allclose(ts.triclinic_dimensions / 10.0, BOX, atol=1e-6)
            assert ts.time == pytest.approx(frames.times[i])


def test_read_h5md_errors(tmp_path: Path) -> None:
    with pytest.raises(H5MDError, match="does not exist"):
        read_h5md(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(H5MDError, match="not a readable HDF5"):
        read_h5md(tmp_path / "text.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(H5MDError, match="not an H5MD file"):
        read_h5md(tmp_path / "plain.h5")
    path = write_h5md(tmp_path / "aa.h5", water_frames(), group="atoms")
    with pytest.raises(H5MDError, match=r"no particle group 'all'; it has \['atoms'\]"):
        read_h5md(path)
    with h5py.File(path, "a") as f:
        del f["particles/atoms/force"]
    with pytest.raises(H5MDError, match="no /particles/atoms/force"):
        read_h5md(path, group="atoms")


def test_write_h5md_rejects_bad_input(tmp_path: Path) -> None:
    frames = water_frames()
    with pytest.raises(H5MDError, match="not JSON-serialisable"):
        write_h5md(tmp_path / "a.h5", frames, config={"x": object()})
    with pytest.raises(H5MDError, match="only 6"):
        write_h5md(tmp_path / "a.h5", frames, constraints=np.array([[0, 6]]))
    with pytest.raises(H5MDError, match="steps"):
        write_h5md(tmp_path / "a.h5", frames, steps=np.arange(3))
    assert not list(tmp_path.iterdir())


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not list(tmp_path.iterdir())
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [target]


def test_load_trajectory_converts_units(tmp_path: Path) -> None:
    frames = water_frames(n_frames=6)
    pdb = write_water_pdb(tmp_path / "top.pdb", 2, frames.positions[0])
    path = write_h5md(tmp_path / "aa.h5", frames)
    universe, loaded = load_trajectory(pdb, path, selection=FrameSelection(start=1, step=2))
    assert universe.atoms.n_atoms == 6
    expected = frames.select(slice(1, None, 2))
    assert loaded.n_frames == 3
    np.testing.assert_allclose(loaded.positions, expected.positions, atol=1e-6)
    np.testing.assert_allclose(loaded.forces, expected.forces, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(loaded.boxes, expected.boxes, atol=1e-6)
    np.testing.assert_allclose(loaded.times, expected.times, atol=1e-6)
    np.testing.assert_allclose(loaded.masses, frames.masses, atol=1e-2)  # guessed from elements
    assert loaded.type_names == ["HOH"]


@pytest.mark.filterwarnings("ignore:DCDReader currently makes independent:DeprecationWarning")
def test_load_trajectory_errors(tmp_path: Path) -> None:
    frames = water_frames()
    pdb = write_water_pdb(tmp_path / "top.pdb", 2, frames.positions[0])
    with pytest.raises(TrajectoryError, match=r"missing\.h5 does not exist"):
        load_trajectory(pdb, tmp_path / "missing.h5")

    dcd = tmp_path / "no_forces.dcd"
    universe = MDAnalysis.Universe(str(pdb))
    with MDAnalysis.Writer(str(dcd), n_atoms=6) as writer:
        writer.write(universe.atoms)
    no_forces = r"no_forces\.dcd has no forces; DCD files cannot hold them; OpenMM: "
    with pytest.raises(TrajectoryError, match=no_forces):
        load_trajectory(pdb, dcd)

    small = write_h5md(tmp_path / "one_water.h5", water_frames(n_molecules=1))
    with pytest.raises(TrajectoryError, match=r"has 6 atoms but trajectory .*one_water\.h5 has 3"):
        load_trajectory(pdb, small)
