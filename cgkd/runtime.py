"""Process settings: the heap and the thread count that make CPU tensor work fast, and the
torch device that networks train and label on (:func:`torch_device`).

Training and labelling allocate and free tensors of tens of MB every batch. With glibc's
defaults each of them is a fresh mmap whose pages the kernel zeroes on first touch, and on
2 cores about half the CPU time went to the kernel. Raising the mmap and trim thresholds
keeps freed memory in the heap for reuse; measured here, a teacher training step on
8 frames x 300 beads took half the time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from pathlib import Path

import openmm
import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory_in_heap() -> bool:
    """Make glibc serve large allocations from the heap and keep them; False if not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD_BYTES)
        )
    except (OSError, AttributeError):
        return False


#: Where cgroup v2 (then v1) states the CPU quota of this process's group.
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (
    Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def allotted_cpus() -> tuple[int, str]:
    """The CPUs this process may use, and what limits them: its affinity mask (taskset,
    numactl, SLURM's binding), its share of that mask when torchrun starts several ranks on
    the node (``LOCAL_WORLD_SIZE``), a cgroup CPU quota (containers, SLURM with cgroups,
    rounded up) or ``SLURM_CPUS_PER_TASK``, whichever is smallest."""
    limits = {"affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0}
    limits["affinity"] = limits["affinity"] or os.cpu_count() or 1
    ranks = os.environ.get("LOCAL_WORLD_SIZE", "")
    if ranks.isdigit() and int(ranks) > 1:
        limits[f"affinity shared by {ranks} ranks"] = max(1, limits["affinity"] // int(ranks))
    quota = _cgroup_quota()
    if quota is not None:
        limits["cgroup CPU quota"] = max(1, math.ceil(quota))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        limits["SLURM_CPUS_PER_TASK"] = int(slurm)
    source = min(limits, key=lambda name: limits[name])
    return limits[source], source


def _cgroup_quota() -> float | None:
    """CPUs' worth of time per period the cgroup grants, or None without a quota."""
    try:
        if _CGROUP_V2.is_file():
            quota, period = _CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if _CGROUP_V1[0].is_file():
            quota, period = (int(path.read_text()) for path in _CGROUP_V1)
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def use_threads(setting: int | str | None) -> tuple[int, str]:
    """Run torch (and the fused kernels) on ``setting`` threads, and make it the default of
    OpenMM's CPU platform (and of child processes: ``OPENMM_CPU_THREADS``). ``auto`` or None:
    :func:`allotted_cpus`. Returns the count and where it came from."""
    if setting is None or setting == "auto":
        count, source = allotted_cpus()
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        count, source = setting, "threads setting"
    else:
        raise ValueError(f"threads={setting!r} is not a thread count; use auto or an integer >= 1")
    torch.set_num_threads(count)
    os.environ["OPENMM_CPU_THREADS"] = str(count)
    openmm.Platform.getPlatformByName("CPU").setPropertyDefaultValue("Threads", str(count))
    return count, source


#: The values of the ``device`` setting besides ``cuda:K``.
DEVICES = ("auto", "cpu", "cuda")


def torch_device(setting: str) -> torch.device:
    """The torch device of the ``device`` setting: ``auto`` (the first GPU torch sees, else
    the CPU), ``cpu``, ``cuda`` or ``cuda:K``. A GPU that torch does not see is a one-line
    error naming the setting."""
    name = str(setting).strip().lower()
    index = name.removeprefix("cuda:")
    if name not in DEVICES and not (name.startswith("cuda:") and index.isdigit()):
        raise ValueError(f"device={setting!r} is not a device; use auto, cpu, cuda or cuda:K")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={setting}: torch sees no GPU (torch.cuda.is_available() is False); "
            "set device=cpu or device=auto"
        )
    count = torch.cuda.device_count()
    if name.startswith("cuda:") and int(index) >= count:
        raise ValueError(
            f"device={setting}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}; "
            "choose one of them"
        )
    return torch.device(name)
