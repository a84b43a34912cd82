"""Cost of the default teacher and student against the number of beads, measured in one run.

usage: python benchmarks/model_scaling.py [--beads 256 1024 4096] [--repeats 5] [--threads N]
       python benchmarks/model_scaling.py --quick   (seconds-long smoke run)

Systems: a water-like CG liquid (33.4 beads/nm^3, one bead per water) in a cubic box, by
random sequential addition with no two beads closer than 0.25 nm (the same structure at
every size). Models: HipnnTS with the sizes of conf/model/hipnn_ts.yaml (teacher) and
conf/model/hipnn_student.yaml (student), one bead type, random weights, float32, eager
mode, with glibc keeping freed memory in the heap as the cgkd command does
(--glibc-default to compare).

Prints, as markdown tables (medians over --repeats after --warmup calls):
* the neighbour search alone (cell list, and the O(N^2) all-pairs search it replaced);
* one force evaluation of one frame (energy, then autograd.grad w.r.t. positions), with
  the ratio and scaling exponent log(t_N / t_M) / log(N / M) against the previous size
  (linear scaling: ratio 4 and exponent 1 from 1024 to 4096 beads);
* teacher training throughput: a batch of frames, forces with create_graph (as in
  cgkd.training.trainer.predict), a force loss, backward and an Adam step.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from cgkd.models.hipnn import HipnnTS
from cgkd.models.neighbors import neighbor_pairs
from cgkd.models.potential import CGPotential
from cgkd.runtime import keep_freed_memory_in_heap

DENSITY = 33.4  # beads per nm^3: one bead per water molecule at 1 g/cm^3
MIN_DISTANCE = 0.25  # nm
CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
MODELS = {"teacher": "hipnn_ts.yaml", "student": "hipnn_student.yaml"}


def model_kwargs(name: str) -> dict:
    """HipnnTS keyword arguments of a model config, for one bead type."""
    with open(CONF / MODELS[name]) as file:
        return {"n_species": 1, **yaml.safe_load(file)}


def build(name: str) -> CGPotential:
    torch.manual_seed(0)
    return CGPotential([HipnnTS(**model_kwargs(name))])


def liquid(n_beads: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [N, 3], box [3, 3]) in nm, float32: random sequential addition of beads at
    the water bead density, each at least MIN_DISTANCE from the others (packing fraction
    0.27, well below RSA jamming at 0.38; about 30 neighbours per bead within 0.6 nm)."""
    rng = np.random.default_rng(seed)
    edge = (n_beads / DENSITY) ** (1 / 3)
    points = np.empty((n_beads, 3))
    count = 0
    while count < n_beads:
        candidate = rng.uniform(0.0, edge, 3)
        delta = points[:count] - candidate
        delta -= edge * np.round(delta / edge)
        if count and np.min(np.einsum("ij,ij->i", delta, delta)) < MIN_DISTANCE**2:
            continue
        points[count] = candidate
        count += 1
    return torch.as_tensor(points, dtype=torch.float32), torch.eye(3) * edge


def median_ms(function: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median wall time of ``function`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def force_evaluation(potential, positions, box, species) -> Callable[[], torch.Tensor]:
    """One frame's forces: energy, then its gradient w.r.t. the positions."""

    def evaluate() -> torch.Tensor:
        x = positions.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(potential(x, box, species).sum(), x)
        return -gradient

    return evaluate


def training_step(potential, positions, boxes, species, targets) -> Callable[[], None]:
    """One training step on a batch: forces with create_graph, force MSE, Adam."""
    optimizer = torch.optim.Adam(potential.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad()
        x = positions.detach().requires_grad_(True)
        energies = potential(x, boxes, species)
        (gradient,) = torch.autograd.grad(energies.sum(), x, create_graph=True)
        loss = torch.mean((-gradient - targets) ** 2)
        loss.backward()
        optimizer.step()

    return step


def scaling(previous: tuple[int, float] | None, beads: int, ms: float) -> tuple[str, str]:
    """(ratio, exponent) of the time against the previous size, or blanks."""
    if previous is None:
        return "", ""
    ratio = ms / previous[1]
    return f"{ratio:.2f}", f"{math.log(ratio) / math.log(beads / previous[0]):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--all-pairs-max", type=int, default=4096, help="largest system for the O(N^2) search"
    )
    parser.add_argument("--train-frames", type=int, default=8)
    parser.add_argument("--train-beads", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="small systems, one repeat")
    parser.add_argument(
        "--glibc-default", action="store_true", help="don't keep freed memory in the heap"
    )
    args = parser.parse_args()
    heap = False if args.glibc_default else keep_freed_memory_in_heap()
    if args.quick:
        args.beads, args.repeats, args.warmup = [128, 512], 1, 1
        args.train_frames, args.train_beads = 2, 128
    torch.set_num_threads(args.threads)
    models = {name: build(name) for name in MODELS}
    systems = {n: liquid(n, seed=n) for n in args.beads}
    cutoff = next(iter(models.values())).cutoff
    print(
        f"float32, {torch.get_num_threads()} threads, {DENSITY} beads/nm^3, cutoff {cutoff} nm, "
        f"median of {args.repeats} after {args.warmup} warm-up calls, freed memory kept in "
        f"the heap: {heap}\n"
    )

    print("| beads | box (nm) | pairs | cell list (ms) | all pairs (ms) | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    search_ms = {}
    for n, (x, box) in systems.items():
        x, box = x.unsqueeze(0), box.unsqueeze(0)
        first, _, vectors = neighbor_pairs(x, box, cutoff)
        closest = float(torch.linalg.norm(vectors, dim=-1).min())
        assert closest >= MIN_DISTANCE - 1e-5, f"beads {closest:.3f} nm apart"
        search = partial(neighbor_pairs, x, box, cutoff)
        search_ms[n] = median_ms(search, args.warmup, args.repeats)
        old = "n/a"
        speedup = ""
        if n <= args.all_pairs_max:
            all_pairs = median_ms(partial(search, "all_pairs"), args.warmup, args.repeats)
            old, speedup = f"{all_pairs:.2f}", f"{all_pairs / search_ms[n]:.1f}"
        print(
            f"| {n} | {float(box[0, 0, 0]):.2f} | {first.numel()} | {search_ms[n]:.2f} | {old} "
            f"| {speedup} |"
        )

    print("\n| model | beads | force evaluation (ms) | neighbour search (ms) | ratio | exponent |")
    print("|---|---:|---:|---:|---:|---:|")
    summary = []
    for name, potential in models.items():
        previous = None
        times = {}
        for n, (x, box) in systems.items():
            species = torch.zeros(n, dtype=torch.long)
            evaluate = force_evaluation(potential, x.unsqueeze(0), box.unsqueeze(0), species)
            ms = median_ms(evaluate, args.warmup, args.repeats)
            ratio, exponent = scaling(previous, n, ms)
            print(f"| {name} | {n} | {ms:.1f} | {search_ms[n]:.2f} | {ratio} | {exponent} |")
            previous, times[n] = (n, ms), ms
        if 1024 in times and 4096 in times:
            ratio = times[4096] / times[1024]
            summary.append(
                f"{name}: t(4096) / t(1024) = {ratio:.2f} (goal <= 4.5), exponent "
                f"{math.log(ratio) / math.log(4):.2f}"
            )
    if summary:
        print("\n" + "\n".join(summary))

    frames, n = args.train_frames, args.train_beads
    batch = [liquid(n, seed=1000 + frame) for frame in range(frames)]
    positions = torch.stack([x for x, _ in batch])
    boxes = torch.stack([box for _, box in batch])
    targets = 100.0 * torch.randn(frames, n, 3, generator=torch.Generator().manual_seed(0))
    species = torch.zeros(n, dtype=torch.long)
    step = training_step(build("teacher"), positions, boxes, species, targets)
    ms = median_ms(step, args.warmup, args.repeats)
    print(
        f"\nteacher training: {frames} frames x {n} beads, {ms:.0f} ms per step "
        f"(forces with create_graph, backward, Adam) = {1000 * frames / ms:.1f} frames/s"
    )


if __name__ == "__main__":
    main()
