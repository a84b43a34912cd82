"""Training-step time of the default teacher and student, with and without
:func:`cgkd.runtime.keep_freed_memory_in_heap`, measured side by side in one run.

usage: python benchmarks/training_step.py [--beads 300] [--frames 8] [--repeats 8]

Each setting runs in its own process (the allocator setting is per process) on the same
random liquid; one step is energy, forces with create_graph, and the backward pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from cgkd.models.checkpoint import build_potential
from cgkd.runtime import keep_freed_memory_in_heap

MODELS = {
    "teacher": dict(n_features=32, n_sensitivities=16, n_atom_layers=2, tensor_order=2),
    "student": dict(n_features=16, n_sensitivities=8, n_atom_layers=1, tensor_order=1),
}


def step_times(beads: int, frames: int, repeats: int) -> dict[str, float]:
    """Median seconds per training step of each model."""
    torch.manual_seed(0)
    edge = (beads / 33.4) ** (1 / 3)  # water's bead density, 1/nm^3
    positions = torch.rand(frames, beads, 3) * edge
    boxes = torch.eye(3).expand(frames, 3, 3) * edge
    species = torch.zeros(beads, dtype=torch.long)
    medians = {}
    for name, kwargs in MODELS.items():
        potential = build_potential([{"n_species": 1, **kwargs}])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x = positions.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(
                potential(x, boxes, species).sum(), x, create_graph=True
            )
            (gradient**2).mean().backward()
            times.append(time.perf_counter() - start)
        medians[name] = sorted(times)[len(times) // 2]
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=300)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--child", choices=["default", "heap"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "heap":
            keep_freed_memory_in_heap()
        print(json.dumps(step_times(args.beads, args.frames, args.repeats)))
        return
    results = {}
    for setting in ("default", "heap"):
        command = [
            sys.executable,
            __file__,
            "--child",
            setting,
            "--beads",
            str(args.beads),
            "--frames",
            str(args.frames),
            "--repeats",
            str(args.repeats),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[setting] = json.loads(output.strip().splitlines()[-1])
    print(f"{args.frames} frames x {args.beads} beads, median of {args.repeats} steps")
    print(f"{'model':8s} {'glibc default (s)':>18s} {'heap kept (s)':>14s} {'speed-up':>9s}")
    for name in MODELS:
        default, heap = results["default"][name], results["heap"][name]
        print(f"{name:8s} {default:18.3f} {heap:14.3f} {default / heap:9.2f}")


if __name__ == "__main__":
    main()
