"""Whether two cgkd caches hold the same numbers: per kind of artifact (AA and CG datasets,
priors, every trained model's weights, labels, soft targets, screened frames, CG
trajectories), the sorted content digests of one cache against the other's.

A refactor that must not change results is checked by running one config with the old and
the new code into two caches (``threads=1``) and comparing them:

    python benchmarks/same_artifacts.py OLD_CACHE NEW_CACHE
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import MDAnalysis as mda
import numpy as np
import torch

from cgkd.training.dataset import Targets


def digest(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes."""
    hashed = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        hashed.update(f"{array.dtype}{array.shape}".encode())
        hashed.update(array.tobytes())
    return hashed.hexdigest()[:16]


def h5md(path: Path) -> str:
    """Every dataset of an H5MD file but its times."""
    found: list[tuple[str, np.ndarray]] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and "time" not in name:
            found.append((name, np.asarray(item[()])))

    with h5py.File(path) as handle:
        handle.visititems(visit)
    return digest(array for _, array in sorted(found, key=lambda entry: entry[0]))


def weights(path: Path) -> str:
    """The tensors of a saved model's state."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    state = saved.get("state_dict", saved)
    return digest(value.numpy() for _, value in sorted(state.items()) if torch.is_tensor(value))


def arrays(path: Path) -> str:
    """Every array of an .npz file."""
    data = np.load(path)
    return digest(data[name] for name in sorted(data.files))


def labels(path: Path) -> str:
    """Every field of a label stage's ``targets/`` directory."""
    targets = Targets.load(path)
    return digest(getattr(targets, name) for name in sorted(vars(targets)))


def trajectory(path: Path) -> str:
    """Every frame of a DCD trajectory (with the topology next to it)."""
    universe = mda.Universe(str(path.with_name("topology.pdb")), str(path))
    return digest(frame.positions.copy() for frame in universe.trajectory)


def text(path: Path) -> str:
    """A file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def selection(path: Path) -> str:
    """The frames a screen stage picked."""
    return json.dumps(json.loads(path.read_text())["indices"])


KINDS: dict[str, Callable[[Path], str]] = {
    "aa.h5md": h5md,
    "cg.h5md": h5md,
    "prior.json": text,
    "teacher.pt": weights,
    "ensemble.pt": weights,
    "soft_student.pt": weights,
    "student.pt": weights,
    "baseline.pt": weights,
    "classical.pt": weights,
    "targets": labels,
    "soft.npz": arrays,
    "selection.json": selection,
    "trajectory.dcd": trajectory,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    same = True
    for name, read in KINDS.items():
        old = sorted(read(path) for path in args.old.rglob(name))
        new = sorted(read(path) for path in args.new.rglob(name))
        same &= old == new
        verdict = "identical" if old == new else "DIFFERENT"
        print(f"{name:16s} {len(old):3d} vs {len(new):3d}  {verdict}")
    print("all identical" if same else "differences")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
