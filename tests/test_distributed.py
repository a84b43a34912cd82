"""Data-parallel training (torchrun, gloo, 2 CPU processes): the ranks take the very steps
one process takes on the same batches, and a killed launch resumes to the same model."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cgkd.distributed import World
from cgkd.training.trainer import _share_of_batches

WORKER = Path(__file__).with_name("train_worker.py")


def torchrun(*args: str, ranks: int = 2) -> subprocess.Popen:
    """``torchrun --standalone`` of ``args`` with ``ranks`` processes of one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={ranks}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command,
        cwd=WORKER.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it (torchrun starts its workers in sessions
    of their own), as a cluster's scheduler ends a job."""
    stack, tree = [pid], []
    while stack:
        parent = stack.pop()
        tree.append(parent)
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            stack += [int(child) for child in children.read_text().split()]
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def finished(process: subprocess.Popen, timeout: float = 300) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def one_process():
    """The data-parallel test's run trained in this process, single-threaded."""
    import train_worker

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield train_worker.tiny_run(None, **train_worker.UNEVEN)
    finally:
        torch.set_num_threads(threads)


def assert_same_model(saved: dict, potential, result) -> None:
    for name, value in potential.state_dict().items():
        torch.testing.assert_close(saved["state"][name], value, rtol=0, atol=1e-5)
    assert len(saved["history"]) == len(result.history)
    for ours, theirs in zip(saved["history"], result.history, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), (ours["epoch"], key)
    assert saved["test"] == pytest.approx(result.test_metrics, rel=1e-5)


def test_each_rank_gets_its_share_of_every_batch():
    order = np.array([7, 3, 9, 1, 4, 8, 2, 6, 0])  # batches of 4: 4, 4 and 1 frames
    shares = [_share_of_batches(order, 4, World(rank, 2)) for rank in (0, 1)]
    (chunks0, active0), (chunks1, active1) = shares
    assert [c.tolist() for c in chunks0] == [[7, 9], [4, 2], [0]]
    assert [c.tolist() for c in chunks1] == [[3, 1], [8, 6], [0]]  # a stand-in for the last
    assert active0 == [True, True, True] and active1 == [True, True, False]
    single, active = _share_of_batches(order, 4, World())
    assert [c.tolist() for c in single] == [[7, 3, 9, 1], [4, 8, 2, 6], [0]] and all(active)


@pytest.mark.slow
def test_two_gloo_ranks_train_the_model_one_process_trains(one_process, tmp_path):
    """Same seed, same global batches (the last one short, so rank 1 sits it out), with a
    hierarchicality term: the two ranks end with one process's weights, losses and learning
    rates, to float tolerance."""
    finished(torchrun(str(WORKER), "-", str(tmp_path / "ddp.pt")))
    assert_same_model(torch.load(tmp_path / "ddp.pt", weights_only=True), *one_process)


@pytest.mark.slow
def test_killed_data_parallel_training_resumes_to_the_same_model(one_process, tmp_path):
    """torchrun killed whole (SIGKILL) after rank 0 checkpointed two epochs; run again, it
    resumes from the checkpoint and ends with the uninterrupted model."""
    checkpoint, out = tmp_path / "run.ckpt", tmp_path / "ddp.pt"
    launch = torchrun(str(WORKER), str(checkpoint), str(out))
    deadline = time.monotonic() + 240
    while launch.poll() is None and time.monotonic() < deadline:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["next_epoch"] >= 2:
            break
        time.sleep(0.01)
    kill_tree(launch.pid)
    launch.communicate()
    killed = torch.load(checkpoint, weights_only=True)
    assert not killed["stopped"] and not out.exists(), "the launch ended before it was killed"
    relaunch = torchrun(str(WORKER), str(checkpoint), str(out))
    finished(relaunch)
    assert_same_model(torch.load(out, weights_only=True), *one_process)
