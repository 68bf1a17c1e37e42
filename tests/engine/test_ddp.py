"""Two gloo processes under torchrun train the same model on different shards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import TINY_OVERRIDES


@pytest.mark.timeout(300)
def test_two_process_gloo_ddp(tiny_data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "train"
    worker = Path(__file__).with_name("_ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(tmp_path), *TINY_OVERRIDES, f"data.root={tiny_data_root}",
           f"train.output_dir={out}", "solver.max_iter=3", "train.checkpoint_period=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k  # gradients were averaged
    assert r0["losses"] != r1["losses"]  # each rank saw its own share of the data
    # Rank 0 alone wrote the checkpoint, holding both ranks' random states.
    ckpt = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert ckpt["iteration"] == 3 and len(ckpt["rng"]) == 2
    for k, v in ckpt["model"].items():
        assert torch.equal(v, r0["params"][k]), k
