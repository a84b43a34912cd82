"""Fused CPU kernels for exported models (``torch.ops.cgkd.*``), compiled on first use.

``hipnn_cpu.cpp`` holds, for HIP-NN-TS networks: the first layer's pair sums over a half
Verlet list (``environment``), the dense layers of a one-block network with their gradient
w.r.t. those sums (``dense``), the forces from that gradient (``environment_backward``), a
deeper layer's pair sums over projected features and their backward
(``feature_environment``, ``feature_environment_backward``), the pair repulsion prior
(``repulsion``); ``cell_list.cpp`` the Verlet list's pair search (``half_pairs``): a few passes over
the pairs instead of the ~60 small tensor operations of the TorchScript model
(:class:`cgkd.simulation.fused.FusedOpenMMPotential` calls them). They are compiled with the
system C++ compiler (``CXX``, default ``c++``; C++20) against the installed torch the first
time they are needed (about 20 s) into a cache directory (``CGKD_OPS_DIR``, default
``~/.cache/cgkd/ops``), keyed by the source, the torch version and the flags, so a changed
source or a new torch never loads a stale build.

A model exported with the kernels (:func:`cgkd.simulation.export.export_flavours`) needs them
loaded before OpenMM reads it: ``torch.ops.load_library(path)`` with the path
:func:`library_path` returns (``python -m cgkd.ops`` prints it). The plain TorchScript export
needs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import warnings
from pathlib import Path

import torch

SOURCES = tuple(Path(__file__).with_name(name) for name in ("hipnn_cpu.cpp", "cell_list.cpp"))
NAME = "cgkd_ops"
FLAGS = ("-O3", "-fopenmp", "-std=c++20")

_loaded: Path | None = None


def build_directory() -> Path:
    """Where the library for this source, torch version and flags is built."""
    root = Path(os.environ.get("CGKD_OPS_DIR", Path.home() / ".cache" / "cgkd" / "ops"))
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES))
    digest.update(torch.__version__.encode())
    digest.update(" ".join(FLAGS).encode())
    return root / digest.hexdigest()[:16]


def library_path() -> Path:
    """The compiled kernel library, built if needed and loaded into this process.

    Building takes a lock in the build directory (processes that start at once build it
    once) and is skipped when the library is up to date. Raises RuntimeError with the
    compiler's message when it cannot be built.
    """
    global _loaded
    if _loaded is None:
        directory = build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        _build_and_load(directory)
        _loaded = directory / f"{NAME}.so"
    return _loaded


def available() -> bool:
    """Whether the kernels are loaded or can be built here (a warning says why not)."""
    try:
        library_path()
    except RuntimeError as error:
        warnings.warn(
            f"cgkd's fused CPU kernels could not be built ({str(error).splitlines()[0]}); "
            "exported models use the slower plain TorchScript path",
            stacklevel=2,
        )
        return False
    return True


def _build_and_load(directory: Path) -> None:
    # torch.utils.cpp_extension logs a CUDA warning on import that does not concern a CPU
    # build; keep it out of users' logs.
    logging.disable(logging.WARNING)
    try:
        from torch.utils import cpp_extension
    finally:
        logging.disable(logging.NOTSET)
    try:
        cpp_extension.load(
            name=NAME,
            sources=[str(source) for source in SOURCES],
            extra_cflags=list(FLAGS),
            build_directory=str(directory),
            is_python_module=False,
            with_cuda=False,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"building the kernels in {directory} failed: {error}") from error
