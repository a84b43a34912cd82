"""Fused CPU kernels for exported models (``torch.ops.cgkd.*``), compiled on first use.

The kernels (``hipnn_cpu.cpp``) compute the first HIP-NN-TS layer's pair environment, its
gradient with respect to the positions and the pair repulsion prior in one pass over a
Verlet list each, instead of the ~60 small tensor operations of the TorchScript model.
They are compiled with the system C++ compiler against the installed torch the first time
they are needed (about 15 s) into a cache directory (``CGKD_OPS_DIR``, default
``~/.cache/cgkd/ops``), keyed by the source, the torch version and the flags, so a
changed source or a new torch never loads a stale build.

A model exported with the kernels (:func:`cgkd.simulation.export.export_torchscript` with
``fused=True``) needs them loaded before OpenMM reads it: ``torch.ops.load_library(path)``
with the path :func:`library_path` returns (``python -m cgkd.ops`` prints it). The plain
TorchScript export needs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("hipnn_cpu.cpp")
NAME = "cgkd_ops"
FLAGS = ("-O3", "-fopenmp", "-std=c++20")

_loaded: Path | None = None


def build_directory() -> Path:
    """Where the library for this source, torch version and flags is built."""
    root = Path(os.environ.get("CGKD_OPS_DIR", Path.home() / ".cache" / "cgkd" / "ops"))
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(torch.__version__.encode())
    digest.update(" ".join(FLAGS).encode())
    return root / digest.hexdigest()[:16]


def library_path() -> Path:
    """The compiled kernel library, built (and loaded into this process) if needed.

    Raises RuntimeError with the compiler's message when it cannot be built.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / f"{NAME}.so"
    if not library.is_file():
        _compile(directory)
    torch.ops.load_library(str(library))
    _loaded = library
    return library


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


def _compile(directory: Path) -> None:
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
            sources=[str(SOURCE)],
            extra_cflags=list(FLAGS),
            build_directory=str(directory),
            is_python_module=False,
            with_cuda=False,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as error:
        raise RuntimeError(f"building {SOURCE.name} in {directory} failed: {error}") from error
