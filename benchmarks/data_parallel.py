"""Training throughput (bead-frames per second) of the teacher and the student networks in one
process and data-parallel over two (torchrun, gloo on the CPU, NCCL on GPUs), side by side.

A synthetic 300-bead dataset (water's density, random forces) is written once; each
configuration then trains each network (the default teacher and student architectures of
``conf/model``, force matching, the default batch of 8) for ``--epochs`` epochs on
``--train-frames`` frames, in a fresh process group, ``--repeats`` times, interleaved. The
throughput counts every training frame of every epoch over the whole wall time (validation
on 8 frames per epoch included).

    python benchmarks/data_parallel.py [--train-frames 64] [--epochs 3] [--repeats 2]

On the CPU the configurations share the machine's cores: one process on one thread, one on
all of them, and two on half each. On a machine with GPUs: one process on one GPU and, with
two or more, two processes on one GPU each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from streamed_training import write_dataset

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, sys, time
import numpy as np, torch
from omegaconf import OmegaConf
from cgkd import distributed
from cgkd.models import build_potential
from cgkd.io.h5md import read_h5md
from cgkd.training.dataset import Splits, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.trainer import TrainSettings, train_potential
path, model, n_train, epochs, device = sys.argv[1:6]
n_train, epochs = int(n_train), int(epochs)
network = {**OmegaConf.to_container(OmegaConf.load(model)), "n_species": 1}
data = TrainingData.from_frames(read_h5md(path))
held_out = np.arange(n_train, n_train + 8)
splits = Splits(np.arange(n_train), held_out, held_out)
with distributed.process_group(torch.device(device)) as device:
    potential = build_potential([network], None, seeds=[0])
    settings = TrainSettings(epochs=epochs, early_stopping=epochs)
    start = time.perf_counter()
    train_potential(potential, data, splits, LossWeights(), settings, progress=False, device=device)
    seconds = time.perf_counter() - start
    if distributed.world().primary:
        print(json.dumps({"bead_frames_per_s": epochs * n_train * data.species.numel() / seconds}))
"""


def configurations(cores: int) -> list[tuple[str, int, int, str]]:
    """(label, processes, threads per process, device) of each configuration."""
    rows = [
        ("1 process, 1 thread", 1, 1, "cpu"),
        (f"1 process, {cores} threads", 1, cores, "cpu"),
        (f"2 processes (gloo), {max(1, cores // 2)} thread(s) each", 2, max(1, cores // 2), "cpu"),
    ]
    if torch.cuda.is_available():
        rows.append(("1 process, 1 GPU", 1, 1, "cuda"))
        if torch.cuda.device_count() >= 2:
            rows.append(("2 processes (NCCL), 1 GPU each", 2, 1, "cuda"))
    return rows


def measure(
    path: Path, model: Path, args: argparse.Namespace, ranks: int, threads: int, device: str
) -> float:
    """Bead-frames per second of one training run."""
    script = Path(tempfile.gettempdir()) / "cgkd_data_parallel_child.py"
    script.write_text(_CHILD)
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command = [*launch, str(script), str(path), str(model), str(args.train_frames)]
    command += [str(args.epochs), device]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["bead_frames_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-frames", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    models = {"teacher": REPO / "conf/model/hipnn_ts.yaml"}
    models["student"] = REPO / "conf/model/hipnn_student.yaml"
    rows = configurations(cores)
    measured: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "cg.h5md"
        write_dataset(path, args.train_frames + 8)
        for repeat in range(args.repeats):
            for name, model in models.items():
                for label, ranks, threads, device in rows:
                    value = measure(path, model, args, ranks, threads, device)
                    measured.setdefault((name, label), []).append(value)
                    print(
                        f"repeat {repeat}: {name}, {label}: {value:.0f} bead-frames/s", flush=True
                    )
    lines = [
        f"Training throughput, bead-frames/s ({args.train_frames} frames of 300 beads, "
        f"{args.epochs} epochs, batch 8; range over {args.repeats} repeats; {cores} cores)",
        "",
        "| network | configuration | bead-frames/s | vs 1 process, 1 thread |",
        "|---|---|---:|---:|",
    ]
    for name in models:
        single = np.mean(measured[(name, rows[0][0])])
        for label, *_ in rows:
            values = measured[(name, label)]
            lines.append(
                f"| {name} | {label} | {min(values):.0f}-{max(values):.0f} "
                f"| {np.mean(values) / single:.2f} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
