"""Peak memory and throughput of training on a CG dataset loaded into memory against one
streamed from its H5MD file (``stream=true``), on synthetic datasets of growing size.

Each dataset is written frame chunk by frame chunk (300 beads of a water-like liquid,
random positions and forces, float64 as cgkd writes them). Each (dataset, mode) pair then
trains, in a fresh process, a small network (so that the data, not the activations,
dominate memory) for ``--epochs`` epochs on ``--train-frames`` frames spread over the
whole file, and reports its peak resident memory (Linux's VmHWM, reset once torch and cgkd
are imported) above its resident memory then, and its training throughput in bead-frames
per second. The in-memory path loads every frame, so its memory grows with the
file; the streamed one holds a batch. With ``--student`` the dataset also gets teacher
labels (random, in the label stage's ``targets/`` files) and the network trains on them as a
student does, reading them whole or, streamed, a batch at a time from their files.

    python benchmarks/streamed_training.py [--frames 2000 8000 32000] [--student] [--workdir DIR]

The files are deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDWriter
from cgkd.training.dataset import LabelWriter, Targets

N_BEADS, EDGE = 300, 2.08  # nm: water's density for 300 one-bead molecules

_CHILD = r"""
import json, sys, time
import numpy as np, torch
from cgkd.io.h5md import read_h5md
from cgkd.models import build_potential
from cgkd.training.dataset import Splits, StreamedFrames, Targets, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainSettings, train_potential
def kib(key):
    lines = open("/proc/self/status").read().splitlines()
    return int(next(line for line in lines if line.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) restarts from here
baseline = kib("VmRSS:")
mode, path, n_train, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
labels = None if sys.argv[6] == "-" else sys.argv[6]
if mode == "streamed":
    data = StreamedFrames(path, labels=labels)
else:
    data = TrainingData.from_frames(read_h5md(path), labels and Targets.load(labels))
weights = LossWeights(0.0, 1.0) if labels else LossWeights()
picked = np.linspace(0, data.n_frames - 1, n_train + 16).round().astype(int)
splits = Splits(train=picked[:-16], val=picked[-16:-8], test=picked[-8:])
network = dict(n_species=1, n_features=16, n_sensitivities=8, n_interactions=1,
               n_atom_layers=1, tensor_order=0, cutoff=0.5, soft_min=0.15, soft_max=0.45)
potential = build_potential([network], None, seeds=[0])
settings = TrainSettings(epochs=epochs, batch_size=4, early_stopping=epochs)
start = time.perf_counter()
train_potential(potential, data, splits, weights, settings, progress=False)
seconds = time.perf_counter() - start
print(json.dumps({
    "bead_frames_per_s": epochs * len(splits.train) * data.species.numel() / seconds,
    "extra_mib": (kib("VmHWM:") - baseline) / 1024,
}))
"""


def write_labels(directory: Path, n_frames: int, seed: int = 1) -> float:
    """Random teacher labels of ``n_frames`` frames in ``directory``, written a chunk at a
    time; their size in MiB."""
    rng = np.random.default_rng(seed)
    with LabelWriter(directory, n_frames, N_BEADS) as writer:
        for first in range(0, n_frames, 500):
            n = min(500, n_frames - first)
            bead_energies = rng.normal(0, 5.0, (n, N_BEADS))
            writer.append(
                Targets(
                    forces=rng.normal(0, 300.0, (n, N_BEADS, 3)),
                    force_std=rng.uniform(10.0, 50.0, (n, N_BEADS, 3)),
                    bead_energies=bead_energies,
                    energies=bead_energies.sum(1),
                )
            )
    return sum(f.stat().st_size for f in directory.iterdir()) / 2**20


def write_dataset(path: Path, n_frames: int, seed: int = 0) -> float:
    """A synthetic CG dataset of ``n_frames`` frames, written a chunk at a time; its size in
    MiB."""
    rng = np.random.default_rng(seed)
    with H5MDWriter(
        path, masses=np.full(N_BEADS, 18.0), types=np.zeros(N_BEADS, int), type_names=["W"]
    ) as writer:
        for first in range(0, n_frames, 500):
            n = min(500, n_frames - first)
            writer.append(
                Frames(
                    positions=rng.uniform(0, EDGE, (n, N_BEADS, 3)),
                    forces=rng.normal(0, 300.0, (n, N_BEADS, 3)),
                    boxes=np.tile(np.eye(3) * EDGE, (n, 1, 1)),
                    times=np.arange(first, first + n, dtype=float),
                    masses=np.full(N_BEADS, 18.0),
                    types=np.zeros(N_BEADS, int),
                    type_names=["W"],
                )
            )
    return path.stat().st_size / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--train-frames", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--student", action="store_true", help="train on teacher labels")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(dir=args.workdir))
    rows = [
        f"{'student (with labels)' if args.student else 'teacher'}:",
        "",
        "| frames | bead-frames | files (MiB) | mode | peak memory above baseline (MiB) "
        "| bead-frames/s |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    try:
        for n_frames in args.frames:
            path = workdir / f"cg_{n_frames}.h5md"
            size = write_dataset(path, n_frames)
            labels = workdir / f"targets_{n_frames}"
            if args.student:
                size += write_labels(labels, n_frames)
            for mode in ("in memory", "streamed"):
                child = [sys.executable, "-c", _CHILD, mode.split()[-1], str(path)]
                child += [str(args.train_frames), str(args.epochs), str(args.threads)]
                child += [str(labels) if args.student else "-"]
                done = subprocess.run(child, capture_output=True, text=True, check=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(
                    f"| {n_frames} | {n_frames * N_BEADS:.2e} | {size:.0f} | {mode} "
                    f"| {measured['extra_mib']:.0f} | {measured['bead_frames_per_s']:.0f} |"
                )
                print(rows[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
