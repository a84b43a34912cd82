"""How fast the mapped forces forget themselves, against how far the beads move: whether
frames saved more often from the same AA run carry new force information.

    python benchmarks/force_decorrelation.py CG_H5MD [--lags 1 2 3 5 10 20 50]

Reads a mapped CG dataset (``cache/map-<key>/cg.h5md``) and prints, for each lag (in saved
frames and ps), the normalised force autocorrelation <F(t).F(t+lag)>/<F.F> over every bead
and the root-mean-square bead displacement (nm, minimum image). Force-matching labels are
the mean force plus noise: a lag at which the forces no longer correlate but the beads have
moved little is a spacing at which each new frame adds an independent sample of the noise
around nearly the same configuration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cgkd.geometry import minimum_image
from cgkd.io.h5md import read_h5md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a mapped CG dataset (H5MD)")
    parser.add_argument("--lags", type=int, nargs="+", default=[1, 2, 3, 5, 10, 20, 50])
    args = parser.parse_args()
    frames = read_h5md(args.dataset)
    forces = frames.forces.astype(np.float64)
    positions = frames.positions.astype(np.float64)
    spacing = float(np.median(np.diff(frames.times)))
    if max(args.lags) >= frames.n_frames:
        raise SystemExit(f"--lags: {args.dataset} has {frames.n_frames} frames; use smaller lags")
    norm = np.mean(np.sum(forces * forces, axis=-1))
    print(f"{args.dataset}: {frames.n_frames} frames, {spacing:g} ps apart")
    print("| lag (ps) | force autocorrelation | rms bead displacement (nm) |")
    print("|---:|---:|---:|")
    for lag in args.lags:
        correlation = np.mean(np.sum(forces[:-lag] * forces[lag:], axis=-1)) / norm
        moved = minimum_image(positions[lag:] - positions[:-lag], frames.boxes[lag:])
        rms = np.sqrt(np.mean(np.sum(moved * moved, axis=-1)))
        print(f"| {lag * spacing:.1f} | {correlation:.3f} | {rms:.3f} |")


if __name__ == "__main__":
    main()
