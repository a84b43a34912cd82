"""Data-parallel launches: the process group of ``torchrun`` or of a submitit/SLURM job with
several tasks, and what the stages and the trainer need of it.

Every process (rank) of a launch runs the same command. Stages that train a network
(:attr:`cgkd.stages.base.Stage.data_parallel`) are built by all ranks together, each on its
share of every batch, through ``DistributedDataParallel``; every other stage is built by rank
0 alone while the others wait for its record. Only rank 0 writes files. The backend is NCCL
on GPUs and gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

log = logging.getLogger(__name__)

#: How long ranks wait for each other (rank 0 building an upstream stage, an AA reference
#: included, keeps the others waiting that long).
TIMEOUT = timedelta(hours=24)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a launch: ``rank`` of ``size`` processes, ``local_rank`` on
    its node. A plain run is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        """Whether this process writes the files (rank 0)."""
        return self.rank == 0


_world = World()
_loss_group: Any = None


def world() -> World:
    """The launch this process belongs to (rank 0 of 1 outside :func:`process_group`)."""
    return _world


def launch_rank() -> int:
    """The rank the launcher gave this process (torchrun's RANK, a submitit task's global
    rank), before any process group exists; 0 for a plain run."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    for name in ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID"):
        if "SUBMITIT_EXECUTOR" in os.environ and name in os.environ:
            return int(os.environ[name])
    return 0


def _export_submitit_environment() -> None:
    """Inside a submitit job of several tasks, set torchrun's variables from it."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "WORLD_SIZE" in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the launch's process group for the duration, when there is one (``WORLD_SIZE`` >
    1); yields the device this rank trains on: ``device``, or on GPUs the node's
    ``LOCAL_RANK``-th."""
    global _world, _loss_group
    _export_submitit_environment()
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1:
        yield device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    _world = World(dist.get_rank(), dist.get_world_size(), local_rank)
    # The loss's sums travel in a group of their own, never between DDP's gradient buckets.
    _loss_group = dist.new_group(backend=backend, timeout=TIMEOUT)
    log.info("rank %d of %d (%s), training on %s", _world.rank, _world.size, backend, device)
    try:
        yield device
    finally:
        dist.destroy_process_group()
        _world, _loss_group = World(), None


def rank_device(device: torch.device) -> torch.device:
    """The GPU of this rank (the node's ``LOCAL_RANK``-th) when ``device`` is a GPU and the
    launch has several ranks; else ``device``."""
    if _world.size > 1 and device.type == "cuda":
        return torch.device("cuda", _world.local_rank)
    return device


def share(value: T) -> T:
    """Rank 0's ``value``, on every rank (a no-op in a plain run)."""
    if _world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_succeed(error: BaseException | None) -> None:
    """Wait for every rank; raise here when any of them failed (``error``: this rank's)."""
    if _world.size == 1:
        if error is not None:
            raise error
        return
    failures: list[Any] = [None] * _world.size
    dist.all_gather_object(failures, None if error is None else f"{error}")
    if error is not None:
        raise error
    if failed := [(rank, text) for rank, text in enumerate(failures) if text is not None]:
        raise RuntimeError(f"rank {failed[0][0]} failed: {failed[0][1]}")


def global_mean(active: bool) -> Callable[[Tensor], Tensor]:
    """The mean over the elements of all ranks of a tensor each rank holds its part of,
    differentiable: each rank's part gets the gradient of the whole times the number of
    ranks, which DDP's averaging of the ranks' gradients undoes. A rank with nothing to
    contribute (``active`` False) passes a stand-in whose elements count nothing. In a plain
    run: ``torch.mean``."""
    if _world.size == 1:
        return torch.mean
    from torch.distributed.nn.functional import all_reduce

    weight = 1.0 if active else 0.0

    def mean(values: Tensor) -> Tensor:
        local = torch.stack([values.sum(), values.new_tensor(float(values.numel()))]) * weight
        total = all_reduce(local, group=_loss_group)
        return total[0] / total[1].detach()

    return mean


def global_sum(active: bool) -> Callable[[Tensor], Tensor]:
    """The elementwise sum over all ranks of a tensor shaped alike on each, differentiable as
    :func:`global_mean` (an inactive rank adds zero). In a plain run: the identity."""
    if _world.size == 1:
        return _identity
    from torch.distributed.nn.functional import all_reduce

    weight = 1.0 if active else 0.0
    return lambda values: all_reduce(values * weight, group=_loss_group)


def _identity(values: Tensor) -> Tensor:
    return values


__all__ = [
    "World",
    "all_succeed",
    "global_mean",
    "global_sum",
    "launch_rank",
    "process_group",
    "rank_device",
    "share",
    "world",
]
