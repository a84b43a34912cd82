"""Users' trajectories in every supported format, unit conversion, selection, bad input, import.

Each file is written from known values in nm, kJ/mol/nm and ps by the independent writers of
tests/formats.py, in the format's own units; reading it back must give the original values.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from formats import (
    FORMATS,
    make_frames,
    write_topology_pdb,
)

from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md, read_h5md_config
from cgkd.io.trajectory import (
    BadFramesWarning,
    FrameScreen,
    FrameSelection,
    TrajectoryError,
    import_trajectory,
    load_trajectory,
)

DATA = Path(__file__).resolve().parent / "data"


def assert_same(loaded: Frames, expected: Frames) -> None:
    """Equal within the float32 precision every one of these formats stores."""
    np.testing.assert_allclose(loaded.positions, expected.positions, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(loaded.forces, expected.forces, rtol=1e-6, atol=2e-4)
    np.testing.assert_allclose(loaded.boxes, expected.boxes, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(loaded.times, expected.times, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.masses, expected.masses)
    assert loaded.type_names == expected.type_names
    np.testing.assert_array_equal(loaded.types, expected.types)


def write_pair(tmp_path: Path, name: str, frames: Frames) -> tuple[Path, Path, dict]:
    writer, suffix, options = FORMATS[name]
    topology = write_topology_pdb(tmp_path / "top.pdb", frames)
    trajectory = tmp_path / f"traj{suffix}"
    writer(trajectory, frames)
    return topology, trajectory, options


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_reads_back_in_nm_and_kj_mol_nm(
    tmp_path: Path, name: str, triclinic: bool
) -> None:
    frames = make_frames(n_frames=3, n_atoms=12, triclinic=triclinic, type_names=("HOH", "SOL"))
    topology, trajectory, options = write_pair(tmp_path, name, frames)
    _, loaded = load_trajectory(topology, trajectory, **options)
    assert_same(loaded, frames)


def test_tng_made_by_gromacs_reads_back() -> None:
    """TNG (written by GROMACS mdrun -rerun; see tests/data/make_tng_fixture.sh)."""
    reference = np.load(DATA / "forces_reference.npz")
    _, loaded = load_trajectory(DATA / "forces_topology.pdb", DATA / "forces.tng")
    np.testing.assert_allclose(loaded.positions, reference["positions"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.forces, reference["forces"], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(loaded.boxes, reference["boxes"], atol=1e-6)
    np.testing.assert_allclose(loaded.times, reference["times"], atol=1e-6)
    assert np.abs(reference["forces"]).max() > 1000  # real GROMACS forces, not zeros


def test_frame_and_time_selection(tmp_path: Path) -> None:
    frames = make_frames(n_frames=10, n_atoms=6)  # times 0, 0.5, ..., 4.5 ps
    topology, trajectory, _ = write_pair(tmp_path, "trr", frames)
    picks = {
        FrameSelection(start=2, stop=8, step=3): [2, 5],
        FrameSelection(time_start=1.0, time_stop=2.5): [2, 3, 4, 5],
        FrameSelection(step=2, time_start=1.2): [4, 6, 8],
        FrameSelection(stop=-7): [0, 1, 2],
    }
    for selection, expected in picks.items():
        _, loaded = load_trajectory(topology, trajectory, selection=selection)
        assert_same(loaded, frames.select(expected))
    with pytest.raises(TrajectoryError, match=r"traj\.trr has no frames in .*widen"):
        load_trajectory(topology, trajectory, selection=FrameSelection(time_start=100.0))
    with pytest.raises(ValueError, match=r"time_stop 1\.0 ps is before time_start 2\.0 ps"):
        FrameSelection(time_start=2.0, time_stop=1.0)


def test_import_streams_chunks_into_the_same_h5md(tmp_path: Path) -> None:
    frames = make_frames(n_frames=7, n_atoms=9)
    topology, trajectory, _ = write_pair(tmp_path, "netcdf", frames)
    result = import_trajectory(
        topology,
        trajectory,
        tmp_path / "aa.h5md",
        selection=FrameSelection(start=1),
        chunk_frames=2,
        config={"note": "x"},
        progress=False,
    )
    assert (result.n_frames, result.n_dropped, result.n_atoms) == (6, 0, 9)
    stored = read_h5md(result.path)
    assert_same(stored, frames.select(slice(1, None)))
    config = read_h5md_config(result.path)
    assert config["note"] == "x"
    assert config["source"]["trajectory"] == str(trajectory)
    assert config["source"]["selection"]["start"] == 1
    assert config["source"]["n_dropped"] == 0


def test_bad_frames_are_an_error_or_dropped_with_a_count(tmp_path: Path) -> None:
    frames = make_frames(n_frames=6, n_atoms=6)
    frames.forces[2, 1, 0] = np.nan
    frames.forces[4, 3, 2] = 5e5  # absurd: a clash or a unit mistake
    topology, trajectory, _ = write_pair(tmp_path, "trr", frames)
    with pytest.raises(TrajectoryError, match=r"traj\.trr frame at t=1 ps has NaN/Inf.*drop"):
        load_trajectory(topology, trajectory)
    out = tmp_path / "aa.h5md"
    with pytest.raises(TrajectoryError, match=r"t=1 ps has NaN"):
        import_trajectory(topology, trajectory, out, progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        ".traj.trr_offsets.lock",
        ".traj.trr_offsets.npz",
        "top.pdb",
        "traj.trr",
    ]  # nothing half-written
    screen = FrameScreen(on_bad_frame="drop")
    with pytest.warns(BadFramesWarning, match=r"dropped 2 of 6 frames of .*traj\.trr"):
        result = import_trajectory(topology, trajectory, out, screen=screen, progress=False)
    assert (result.n_frames, result.n_dropped) == (4, 2)
    assert_same(read_h5md(out), frames.select([0, 1, 3, 5]))
    with pytest.raises(TrajectoryError, match=r"force of 5e\+05 kJ/mol/nm \(max_force 100000\)"):
        load_trajectory(topology, trajectory, selection=FrameSelection(start=3))
    _, kept = load_trajectory(
        topology, trajectory, selection=FrameSelection(start=3), screen=FrameScreen(max_force=1e6)
    )
    assert kept.n_frames == 3


def test_units_must_be_known(tmp_path: Path) -> None:
    frames = make_frames(n_frames=2, n_atoms=6)
    topology, dump, _ = write_pair(tmp_path, "lammps-real", frames)
    with pytest.raises(TrajectoryError, match=r"traj\.lammpsdump \(LAMMPSDUMP\) does not record"):
        load_trajectory(topology, dump, timestep=1.0)
    with pytest.raises(TrajectoryError, match=r"unknown unit preset 'lammps' .*lammps-real"):
        load_trajectory(topology, dump, units="lammps")
    bad = {"length": "angstrom", "force": "kcal/mol/nm", "time": "fs"}
    with pytest.raises(TrajectoryError, match=r"unknown force unit 'kcal/mol/nm' for .*dump"):
        load_trajectory(topology, dump, units=bad)
    explicit = {"length": "angstrom", "force": "kcal/mol/angstrom", "time": "fs"}
    _, loaded = load_trajectory(topology, dump, units=explicit, timestep=1.0)
    assert_same(loaded, frames)
    with pytest.warns(UserWarning, match="stores step numbers, not times; set input.timestep"):
        _, stepped = load_trajectory(topology, dump, units="lammps-real")
    np.testing.assert_allclose(stepped.times, frames.times)  # 1 fs is LAMMPS real's default


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", ["trr", "netcdf", "h5md", "lammps-real"])
def test_empty_and_truncated_files_are_named(tmp_path: Path, name: str) -> None:
    frames = make_frames(n_frames=6, n_atoms=30)
    topology, trajectory, options = write_pair(tmp_path, name, frames)
    data = trajectory.read_bytes()
    # Cut inside the last frame: every reader must say so, not silently return 5 frames.
    trajectory.write_bytes(data[: int(0.93 * len(data))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis's noise about the broken reader
        with pytest.raises(TrajectoryError, match=rf"{trajectory.name}.*(truncated|corrupt)"):
            load_trajectory(topology, trajectory, **options)
    trajectory.write_bytes(b"")
    with pytest.raises(TrajectoryError, match=rf"{trajectory.name} is empty \(0 bytes\)"):
        load_trajectory(topology, trajectory, **options)


def test_truncated_tng_is_an_error_not_a_crash(tmp_path: Path) -> None:
    data = (DATA / "forces.tng").read_bytes()
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{fraction}.tng"
        cut.write_bytes(data[: int(fraction * len(data))])
        with pytest.raises(TrajectoryError, match=rf"cut{fraction}\.tng is truncated or corrupt"):
            load_trajectory(DATA / "forces_topology.pdb", cut)
