"""The benchmark scripts' way to run ``cgkd``: a subprocess in a work directory (where its
``cache/`` lives) with ``threads`` OpenMP threads, echoed and timed; the long AA references
of the fidelity benchmarks; and the JSON files that keep each run's numbers, so that runs
made in different sessions add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The long AA references of the fidelity benchmarks (issue 23), as ``cgkd`` overrides:
#: water 1 ns saved every 1 ps (1000 frames); reline, choline in two beads, 500 ps saved
#: every 0.5 ps (1000 frames). Every run uses ``data_seed=0``: one reference per system.
LONG_REFERENCES = {
    "water": ["system.production=1000", "system.save_interval=500"],
    "reline": [
        "experiment=reline",
        "mapping=reline_multibead",
        "system.production=500",
    ],
}


def run_cgkd(args: list[str], work: Path, threads: int, label: str) -> None:
    """``cgkd <args>`` in ``work``; raises if it fails; prints the command and its minutes."""
    command = [sys.executable, "-m", "cgkd.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print(" ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True)
    print(f"{label} took {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def commit() -> str:
    """The repository's short commit hash, recorded with every kept run."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


class KeptRuns:
    """A JSON list of per-run entries (plain dicts), each identified by the values of
    ``identity`` (e.g. seed and route): :meth:`keep` replaces an entry of the same identity,
    :meth:`save` writes the file, so a later call adds to what earlier calls measured."""

    def __init__(self, path: Path, identity: tuple[str, ...]) -> None:
        self.path = path
        self.identity = identity
        self.entries: list[dict] = json.loads(path.read_text()) if path.exists() else []

    def keep(self, entry: dict) -> None:
        """Add ``entry``, dropping a kept one with the same identity."""
        same = tuple(entry[name] for name in self.identity)
        self.entries = [
            e for e in self.entries if tuple(e.get(name) for name in self.identity) != same
        ]
        self.entries.append(entry)

    def save(self) -> None:
        """Write the entries (one per line's object, indented)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.entries, indent=1) + "\n")
