"""The benchmark scripts' way to run ``cgkd``: a subprocess in a work directory (where its
``cache/`` lives) with ``threads`` OpenMP threads, echoed and timed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def run_cgkd(args: list[str], work: Path, threads: int, label: str) -> None:
    """``cgkd <args>`` in ``work``; raises if it fails; prints the command and its minutes."""
    command = [sys.executable, "-m", "cgkd.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    print(" ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True)
    print(f"{label} took {(time.perf_counter() - started) / 60:.1f} min", flush=True)
