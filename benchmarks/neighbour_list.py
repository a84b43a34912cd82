"""The fused export's Verlet-list rebuild against a maintained neighbour list (vesin-torch).

usage: python benchmarks/neighbour_list.py [--sizes 1000 8000] [--calls 30] [--repeats 3]

On benchmarks/md_speed.py's water boxes (one bead per water at the molecules' centres of
mass), a half list of the pairs within the student's cutoff plus the Verlet skin (0.6 + 0.1
nm), with lattice shifts, as one rebuild of the fused export needs it. Timed side by side,
in turn, ``--repeats`` times, median ms per search of ``--calls`` calls:

- cgkd's C++ cell list (``torch.ops.cgkd.half_pairs``: sorted by first, then second bead);
- cgkd's torch cell list (``cgkd.geometry.pair_search``, the plain export's search),
  made half and sorted the same way;
- vesin-torch (``vesin_torch.NeighborList(full_list=False, algorithm="cell_list")``, the
  same threads), as it comes (unsorted) and sorted by (first, second), which the fused
  kernels' deterministic bead blocks need.

vesin-torch is not a cgkd dependency: ``pip install vesin-torch`` to include it (it is skipped,
with a note, otherwise). Every method's pair set is checked against the C++ list's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from md_speed import aa_box

from cgkd import ops
from cgkd.models.neighbors import canonical_order
from cgkd.simulation.export import DEFAULT_SKIN, VerletList

CUTOFF = 0.6  # nm, the default student's

Search = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def torch_search(x: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """cgkd's torch cell list, half and sorted (what the plain export's Verlet list runs)."""
    verlet = VerletList(CUTOFF, DEFAULT_SKIN, True, torch.zeros(0, dtype=torch.long))
    return verlet._search(x, box, CUTOFF + DEFAULT_SKIN)


def vesin_searches() -> dict[str, Search]:
    """vesin-torch, unsorted and sorted by (first, second); empty if it is not installed."""
    try:
        from vesin_torch import NeighborList
    except ImportError:
        print("vesin-torch is not installed (pip install vesin-torch): left out")
        return {}
    vesin = NeighborList(
        cutoff=CUTOFF + DEFAULT_SKIN,
        full_list=False,
        algorithm="cell_list",  # its "auto" chose brute force here, 2-4x slower
        n_threads=torch.get_num_threads(),
    )

    def raw(x: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, ...]:
        first, second, shifts = vesin.compute(x, box, periodic=True, quantities="ijS")
        return first, second, shifts

    def ordered(x: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, ...]:
        first, second, shifts = raw(x, box)
        swap = first > second
        first, second = torch.where(swap, second, first), torch.where(swap, first, second)
        shifts = torch.where(swap.unsqueeze(1), -shifts, shifts)
        order = canonical_order(first, second, x.shape[0])
        return first[order], second[order], shifts[order]

    return {"vesin-torch, unsorted": raw, "vesin-torch, sorted": ordered}


def pair_set(first: torch.Tensor, second: torch.Tensor) -> set[tuple[int, int]]:
    """The unordered pairs of a list."""
    low, high = torch.minimum(first, second), torch.maximum(first, second)
    return set(zip(low.tolist(), high.tolist(), strict=True))


def time_search(search: Search, x: torch.Tensor, box: torch.Tensor, calls: int) -> float:
    """Median ms of ``calls`` searches."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        search(x, box)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 8000])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not ops.available():
        raise SystemExit("the fused kernels did not build (python -m cgkd.ops says why)")
    searches: dict[str, Search] = {
        "cgkd C++ cell list (fused export)": lambda x, box: torch.ops.cgkd.half_pairs(
            x, box, CUTOFF + DEFAULT_SKIN
        ),
        "cgkd torch cell list (plain export)": torch_search,
        **vesin_searches(),
    }
    print(f"threads: {torch.get_num_threads()}; cutoff + skin {CUTOFF + DEFAULT_SKIN} nm")
    for size in args.sizes:
        _, centres, box_array = aa_box(size, 1)
        x, box = torch.from_numpy(centres).double(), torch.from_numpy(box_array).double()
        reference = torch.ops.cgkd.half_pairs(x, box, CUTOFF + DEFAULT_SKIN)
        expected = pair_set(reference[0], reference[1])
        for name, search in searches.items():
            first, second, _ = search(x, box)
            if pair_set(first, second) != expected:
                raise SystemExit(f"{name}: not the C++ cell list's {len(expected)} pairs")
        times: dict[str, list[float]] = {name: [] for name in searches}
        for _ in range(args.repeats):
            for name, search in searches.items():
                times[name].append(time_search(search, x, box, args.calls))
        base = statistics.median(times["cgkd C++ cell list (fused export)"])
        print(f"\n{size} beads, {len(expected)} pairs: ms per search, median (range)")
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"  {name:40s} {median:7.2f} ({min(values):.2f}-{max(values):.2f})"
                f"  {median / base:5.2f}x the C++ cell list"
            )


if __name__ == "__main__":
    main()
