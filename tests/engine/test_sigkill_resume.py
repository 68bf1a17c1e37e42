"""A real kill: ``train`` in a child process gets SIGKILL at a random iteration, ``--resume``
finishes the run, and the weights are bit-equal to an uninterrupted run's; metrics.jsonl
then holds every iteration exactly once (the records written after the last checkpoint, and
repeated by the resumed run, are cut at the resume)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from levelset_rcnn.cli import main

from .conftest import TINY_OVERRIDES

pytestmark = pytest.mark.timeout(300)

MAX_ITER = 8


def _args(out: Path, root: Path) -> list[str]:
    return ["train", "--output", str(out), "--no-progress", "--no-tensorboard",
            *TINY_OVERRIDES, f"data.root={root}", f"solver.max_iter={MAX_ITER}",
            "train.checkpoint_period=2", "train.log_period=1"]


def _iterations(path: Path) -> list[int]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line)["iteration"])
        except ValueError:  # a line torn by the kill
            out.append(-1)
    return out


def test_sigkill_then_resume_is_bit_equal(tiny_data_root: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    threads = torch.get_num_threads()
    monkeypatch.setenv("LEVELSET_RCNN_THREADS", "1")  # the same kernels' partitioning
    # records seen before the kill: odd, so that the record after the checkpoint is written
    kill_after = random.Random().choice(range(3, MAX_ITER - 1, 2))
    out = tmp_path / "killed"
    env = {**os.environ, "LEVELSET_RCNN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "levelset_rcnn.cli", *_args(
        out, tiny_data_root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    seen = _iterations(metrics)
    last = torch.load(out / "checkpoint_last.pth", weights_only=True)["iteration"]
    assert 2 <= last < MAX_ITER and not (out / "model_final.pth").exists(), (kill_after, seen)

    try:
        assert main(_args(out, tiny_data_root) + ["--resume"]) == 0
        assert main(_args(tmp_path / "whole", tiny_data_root)) == 0
    finally:
        torch.set_num_threads(threads)
    assert _iterations(metrics) == list(range(1, MAX_ITER + 1)), (kill_after, last, seen)
    got = torch.load(out / "model_final.pth", weights_only=True)["model"]
    want = torch.load(tmp_path / "whole" / "model_final.pth", weights_only=True)["model"]
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), (name, kill_after, last)
