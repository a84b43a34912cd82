"""What a stage is: its declared inputs, its derived cache key and its cached directory.

A :class:`Stage` declares the config paths it reads (``reads``), the input files whose
contents matter (``files``) and the upstream stages it needs (``needs``, computed from its
reads only). Its cache key is the hash of exactly those: the values of its reads, the
digests of its files, its upstream stages' keys, its parameter and its ``version`` (raise
the version when the code changes what the stage writes). A build can only see what the
stage declared: :class:`Context` refuses any other config path, so a key cannot miss an
input.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from cgkd import distributed

#: Config paths that change how a run executes, never what it computes: no key holds them.
EXECUTION = (
    "stage",
    "progress",
    "threads",
    "device",
    "stream",
    "cache_dir",
    "input.name",
    "teacher.n_jobs",
    "teacher.member",
    "simulate.threads",
    "sampler.platform",
    "sampler.threads",
    "hydra",
)

Record = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One stage to run: its name and, for stages that come in several (teacher members,
    simulated models), which one."""

    stage: str
    param: int | str | None = None

    def __str__(self) -> str:
        return self.stage if self.param is None else f"{self.stage}[{self.param}]"


Paths = tuple[str, ...] | Callable[["Context"], tuple[str, ...]]


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline (see the module docstring).

    ``ignores`` names config paths under a read section that the stage's result does not
    depend on (``simulate.models`` for the run of one model): with the execution settings
    (:data:`EXECUTION`) they are left out of the key.

    ``build(context)`` makes the stage's files in ``context.out`` and returns its record (a
    JSON-able dict); ``keep`` names files (glob patterns) a failed build leaves for the next
    try (training checkpoints, MD replicas). An uncached stage (``cached=False``) writes
    nothing and is rebuilt every time; its key is still derived, so that the stages
    downstream are keyed by its inputs. In a data-parallel launch (:mod:`cgkd.distributed`)
    a ``data_parallel`` stage (one that trains a network) is built by every rank together;
    any other by rank 0 alone.
    """

    name: str
    summary: str
    build: Callable[[Context], Record]
    reads: Paths = ()
    files: Paths = ()
    needs: Callable[[Context], dict[str, Request]] = lambda context: {}
    ignores: tuple[str, ...] = ()
    version: int = 1
    keep: tuple[str, ...] = ()
    cached: bool = True
    data_parallel: bool = False

    def paths(self, declared: Paths, context: Context) -> tuple[str, ...]:
        """``reads`` or ``files`` for this context (they may depend on declared config)."""
        return declared(context) if callable(declared) else declared


class UndeclaredReadError(KeyError):
    """A stage read a config path it did not declare."""


@dataclass
class Context:
    """What a stage's build sees: its declared config, its parameter, its upstream records,
    its output directory and the execution settings (``progress``)."""

    config: DictConfig
    stage: Stage
    param: int | str | None = None
    upstream: dict[str, Record] = field(default_factory=dict)
    out: Path | None = None
    #: The declared reads; None while the reads themselves are being worked out, when every
    #: path read is recorded in ``accessed`` (and must then be among the reads).
    declared: tuple[str, ...] | None = None
    accessed: list[str] = field(default_factory=list)

    def __call__(self, path: str) -> Any:
        """The plain value (dicts, lists, numbers) at the dotted config ``path``; only paths
        at or under a declared read, or the execution settings."""
        if self.declared is None:
            self.accessed.append(path)
        elif not covered(path, (*self.declared, *EXECUTION)):
            raise UndeclaredReadError(
                f"stage {self.stage.name} reads {path!r} but declares only {list(self.declared)}"
            )
        return plain(OmegaConf.select(self.config, path, throw_on_missing=True))

    @classmethod
    def unchecked(cls, config: DictConfig) -> Context:
        """A context that may read any path of ``config`` (for tools and tests, not stages)."""
        return cls(config, Stage("config", "the whole config", build=lambda context: {}))

    def settings(self, path: str, **runtime: Any) -> Any:
        """The settings object of the config section at ``path`` (a declared read), with the
        ``runtime`` fields the code sets (e.g. ``seed``); see :func:`cgkd.config.to_settings`."""
        from cgkd.config import to_settings

        self(path)  # checks the path is declared
        return to_settings(OmegaConf.select(self.config, path), **runtime)

    @property
    def progress(self) -> bool:
        """Whether to show progress bars (rank 0's only, in a data-parallel launch)."""
        return bool(self.config.progress) and distributed.world().primary

    @property
    def device(self) -> torch.device:
        """The torch device networks train and label on (the ``device`` setting)."""
        from cgkd.runtime import torch_device

        return distributed.rank_device(torch_device(self.config.device))

    @property
    def directory(self) -> Path:
        """The stage's output directory (a cached stage's build only)."""
        if self.out is None:
            raise RuntimeError(f"stage {self.stage.name} is not cached: it has no directory")
        return self.out


def covered(path: str, reads: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``reads`` or lies under one."""
    return any(path == read or path.startswith(f"{read}.") for read in reads)


def without(value: Any, path: str, left_out: tuple[str, ...]) -> Any:
    """The plain config ``value`` at ``path`` without the entries at the paths ``left_out``."""
    if not isinstance(value, dict):
        return value
    return {
        key: without(item, f"{path}.{key}", left_out)
        for key, item in value.items()
        if f"{path}.{key}" not in left_out
    }


def plain(value: Any) -> Any:
    """A config node as plain Python (interpolations resolved); other values unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


#: Input files up to this size (bytes) are keyed by their contents, larger ones by their
#: resolved path, size and modification time (hashing a large trajectory at every run is slow).
DIGEST_LIMIT = 256 << 20


def file_identity(path: str | Path) -> str:
    """What an input file contributes to a key: the SHA-256 of its bytes, or for a file over
    :data:`DIGEST_LIMIT` its resolved path, size and modification time."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    stat = path.stat()
    if stat.st_size > DIGEST_LIMIT:
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def derive_key(
    stage: Stage,
    param: int | str | None,
    reads: Mapping[str, Any],
    files: Mapping[str, str | None],
    upstream: Mapping[str, str],
) -> str:
    """The stage's cache key: a hash of its name, version, parameter, read values, input file
    digests and upstream keys (by role)."""
    text = json.dumps(
        {
            "stage": stage.name,
            "version": stage.version,
            "param": param,
            "reads": dict(reads),
            "files": dict(files),
            "upstream": dict(upstream),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class StageDir:
    """A cached stage's directory ``<cache_dir>/<name>-<key>/``, complete once its
    ``done.json`` exists.

    Several processes (a Hydra multirun, parallel ensemble members) may reach the same stage
    at once: :meth:`run` holds a lock (``<cache_dir>/.locks/<name>-<key>.lock``) while it
    checks and builds the stage, so one process builds it and the others reuse the result.
    The ranks of a data-parallel launch are one process as far as the cache goes: rank 0
    holds the lock and writes, the others get its record.
    """

    path: Path
    key: str

    @property
    def done(self) -> bool:
        """Whether the stage finished (its done.json exists)."""
        return (self.path / "done.json").is_file()

    def begin(self, keep: tuple[str, ...] = ()) -> Path:
        """Start (or restart) the stage: an empty directory, except for the files named in
        ``keep`` (e.g. a training checkpoint to resume from)."""
        self._clear(keep)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def abandon(self, keep: tuple[str, ...] = ()) -> None:
        """After a failed build: remove everything but ``keep`` (what a rerun resumes from),
        and the directory itself when nothing is left."""
        self._clear(keep)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def _clear(self, keep: tuple[str, ...]) -> None:
        if not self.path.exists():
            return
        for entry in self.path.iterdir():
            if any(fnmatch.fnmatch(entry.name, pattern) for pattern in keep):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def finish(self, inputs: dict[str, Any], record: Record) -> Record:
        """Write config.yaml (the stage's inputs) and, last, done.json (atomic) with
        ``record``."""
        (self.path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(inputs)))
        write_json(self.path / "done.json", record)
        return record

    def record(self) -> Record:
        """The record of a finished stage."""
        return json.loads((self.path / "done.json").read_text())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the stage's lock (waiting for whoever holds it)."""
        locks = self.path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def run(
        self,
        build: Callable[[Path], Record],
        inputs: dict[str, Any],
        keep: tuple[str, ...] = (),
        together: bool = False,
    ) -> Record:
        """The stage's record: reused when done, else ``build(directory)`` makes it and
        :meth:`finish` records it with ``inputs``. Holds the stage's lock throughout. A build
        that fails (or is interrupted) leaves only ``keep`` behind: nothing half-written.

        In a data-parallel launch rank 0 does all that; with ``together`` the other ranks
        build alongside it, each in a scratch directory of its own (:meth:`_scratch`), and
        every rank gets rank 0's record (a failure on any rank fails them all)."""
        if distributed.world().size > 1:
            return self._run_on_ranks(build, inputs, keep, together)
        with self.locked():
            if self.done:
                return self.record()
            try:
                record = build(self.begin(keep))
            except BaseException:
                self.abandon(keep)
                raise
            return self.finish(inputs, {"key": self.key, **record})

    def _run_on_ranks(
        self,
        build: Callable[[Path], Record],
        inputs: dict[str, Any],
        keep: tuple[str, ...],
        together: bool,
    ) -> Record:
        primary = distributed.world().primary
        with self.locked() if primary else nullcontext():
            if distributed.share(self.done if primary else None):
                return distributed.share(self.record() if primary else None)
            record, error = None, None
            try:
                if primary:
                    record = build(self.begin(keep))
                elif together:
                    with self._scratch() as scratch:
                        build(scratch)
            except BaseException as caught:  # every rank must hear of it, then it is raised
                error = caught
            try:
                distributed.all_succeed(error)
            except BaseException:
                if primary:
                    self.abandon(keep)
                raise
            if primary:
                assert record is not None
                self.finish(inputs, {"key": self.key, **record})
            return distributed.share(self.record() if primary else None)

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        """An empty directory where a rank other than 0 builds what rank 0 builds in the
        stage's own (``<cache_dir>/.ranks/<name>-rank<K>``), removed afterwards."""
        scratch = self.path.parent / ".ranks" / f"{self.path.name}-rank{distributed.world().rank}"
        shutil.rmtree(scratch, ignore_errors=True)  # left by a rank killed mid-build
        scratch.mkdir(parents=True)
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file renamed over ``path``)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)
