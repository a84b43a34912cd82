"""Trajectories with forces in (any format MDAnalysis reads, converted at this edge to nm,
kJ/mol/nm, ps, amu) and H5MD out: the one format every later stage reads."""

from cgkd.io.checks import TrajectoryError
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDError, H5MDReader, H5MDWriter, read_h5md, read_h5md_bonds, write_h5md
from cgkd.io.reader import OpenTrajectory, open_trajectory
from cgkd.io.trajectory import (
    FrameScreen,
    FrameSelection,
    ImportResult,
    import_trajectory,
    iter_frames,
    load_trajectory,
    sample_frames,
)

__all__ = [
    "FrameScreen",
    "FrameSelection",
    "Frames",
    "H5MDError",
    "H5MDReader",
    "H5MDWriter",
    "ImportResult",
    "OpenTrajectory",
    "TrajectoryError",
    "import_trajectory",
    "iter_frames",
    "load_trajectory",
    "open_trajectory",
    "read_h5md",
    "read_h5md_bonds",
    "sample_frames",
    "write_h5md",
]
