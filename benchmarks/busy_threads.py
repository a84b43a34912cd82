"""Training-step time against the thread count, on a quiet machine and beside a busy neighbour.

usage: python benchmarks/busy_threads.py [--beads 300] [--frames 8] [--repeats 5]

The default teacher's and student's training step (benchmarks/training_step.py: energy,
forces with create_graph, backward) with 1 thread and with all the CPUs this process may use
(cgkd.runtime.allotted_cpus, what ``threads: auto`` gives), first on a quiet machine, then
while another process keeps one CPU busy (a pure-Python loop, as another user's job would).
Each setting runs in its own process, with the heap setting of every cgkd run. Prints the
median ms per step and the slowdown that the busy neighbour causes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from training_step import step_times

from cgkd.runtime import allotted_cpus, keep_freed_memory_in_heap

HERE = Path(__file__).resolve().parent


def child(threads: int, beads: int, frames: int, repeats: int) -> dict[str, float]:
    """Median seconds per step of each model, measured in a fresh process."""
    command = [sys.executable, str(Path(__file__)), "--child", str(threads)]
    command += ["--beads", str(beads), "--frames", str(frames), "--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=HERE)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=300)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        keep_freed_memory_in_heap()  # as every cgkd run does
        torch.set_num_threads(args.child)
        print(json.dumps(step_times(args.beads, args.frames, args.repeats)))
        return
    allotted, source = allotted_cpus()
    counts = sorted({1, allotted})
    print(f"allotted CPUs: {allotted} ({source}); {args.beads} beads x {args.frames} frames")
    times: dict[tuple[str, int], dict[str, float]] = {}
    for condition in ("quiet", "busy"):
        neighbour = None
        if condition == "busy":
            neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for threads in counts:
                times[condition, threads] = child(threads, args.beads, args.frames, args.repeats)
        finally:
            if neighbour is not None:
                neighbour.kill()
    print("\nms per training step, median:")
    print(f"{'model':8s} {'threads':>7s} {'quiet':>9s} {'busy':>9s} {'busy/quiet':>10s}")
    for model in times["quiet", 1]:
        for threads in counts:
            quiet, busy = times["quiet", threads][model], times["busy", threads][model]
            print(
                f"{model:8s} {threads:7d} {1000 * quiet:9.1f} {1000 * busy:9.1f} "
                f"{busy / quiet:10.2f}"
            )


if __name__ == "__main__":
    main()
