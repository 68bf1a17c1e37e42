"""The DDP helpers without a process group: the single-process answers (the two-process
behaviour is covered by tests/engine/test_ddp.py and tests/evaluation/test_ddp_merge.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from levelset_rcnn import comm


def test_single_process_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert (comm.get_rank(), comm.get_world_size(), comm.is_main_process()) == (0, 1, True)
    comm.barrier()
    assert comm.all_gather({"a": 1}) == [{"a": 1}]
    assert comm.all_reduce_max(2.5, torch.device("cpu")) == 2.5
    assert comm.init_distributed(torch.device("cpu")) is False
    comm.cleanup()


def test_unwrap_and_devices() -> None:
    inner = nn.Linear(2, 2)
    wrapper = nn.Module()
    wrapper.module = inner  # what DistributedDataParallel looks like from outside
    assert comm.unwrap(wrapper) is inner and comm.unwrap(inner) is inner
    assert comm.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert comm.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            comm.resolve_device("cuda")
