"""The run's thread count: what the process is allowed (affinity, cgroup quota, SLURM), and
that torch and OpenMM's CPU platform then use it."""

from __future__ import annotations

import os
import subprocess
import sys

import openmm
import pytest
import torch

from cgkd import runtime


def test_slurm_allotment_is_followed(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert runtime.allotted_cpus() == (1, "SLURM_CPUS_PER_TASK")


def test_ranks_of_a_torchrun_launch_share_the_node(monkeypatch, tmp_path):
    """torchrun's ranks on one node split its CPUs (each gets at least one)."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(runtime, "_CGROUP_V2", tmp_path / "no cpu.max")
    monkeypatch.setattr(runtime, "_CGROUP_V1", (tmp_path / "no quota", tmp_path / "no period"))
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    expected = (affinity // 2, "affinity shared by 2 ranks") if affinity > 1 else (1, "affinity")
    assert runtime.allotted_cpus() == expected
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * affinity))
    assert runtime.allotted_cpus()[0] == 1


def test_cgroup_quota_is_rounded_up_and_capped_by_affinity(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(runtime, "_CGROUP_V2", cpu_max)
    affinity = len(os.sched_getaffinity(0))
    cpu_max.write_text("50000 100000\n")  # half a CPU
    assert runtime.allotted_cpus() == (1, "cgroup CPU quota" if affinity > 1 else "affinity")
    cpu_max.write_text("max 100000\n")  # no quota
    assert runtime.allotted_cpus() == (affinity, "affinity")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_affinity_mask_is_followed():
    """A process pinned to one CPU (taskset, SLURM binding) gets one thread."""
    first = min(os.sched_getaffinity(0))
    code = "from cgkd.runtime import allotted_cpus; print(*allotted_cpus())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"},
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["1", "affinity"]


def test_use_threads_sets_torch_and_the_openmm_cpu_default():
    platform = openmm.Platform.getPlatformByName("CPU")
    before = torch.get_num_threads(), platform.getPropertyDefaultValue("Threads")
    try:
        assert runtime.use_threads(1) == (1, "threads setting")
        assert torch.get_num_threads() == 1
        system = openmm.System()
        system.addParticle(1.0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        assert platform.getPropertyValue(context, "Threads") == "1"
        assert runtime.use_threads("auto")[0] == runtime.allotted_cpus()[0]
        with pytest.raises(ValueError, match="threads='many'"):
            runtime.use_threads("many")
        with pytest.raises(ValueError, match="threads=0"):
            runtime.use_threads(0)
    finally:
        torch.set_num_threads(before[0])
        platform.setPropertyDefaultValue("Threads", before[1])


def test_device_setting_names_a_torch_device():
    torch_device = runtime.torch_device
    assert torch_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_device("auto").type == expected
    with pytest.raises(ValueError, match=r"device='gpu' is not a device; use auto, cpu, cuda"):
        torch_device("gpu")
    with pytest.raises(ValueError, match=r"device=cuda:99: torch sees"):
        torch_device("cuda:99")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_that_torch_does_not_see_is_a_one_line_error_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"^device=cuda: torch sees no GPU .*set device=cpu"):
        runtime.torch_device("cuda")
    run = subprocess.run(
        [sys.executable, "-m", "cgkd.cli", "teach", "device=cuda", "progress=false"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode != 0
    assert "cgkd teach: device=cuda: torch sees no GPU" in run.stderr
    assert "Traceback" not in run.stderr
