"""The one home of the PyTorch DDP helpers (ground floor: importable from every layer).

Everything here is a no-op, or the single-process answer, when no process group is up, so that
the same code runs on one CPU, one GPU or under ``torchrun`` (env:// rendezvous: gloo on the
CPU, NCCL on GPUs). The process group itself is PyTorch's; nothing here is home-made
communication.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["all_gather", "all_reduce_max", "barrier", "cleanup", "get_rank", "get_world_size",
           "init_distributed", "is_main_process", "resolve_device", "unwrap"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files, logs and progress bars."""
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (``[obj]`` when not distributed)."""
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_max(value: float, device: torch.device) -> float:
    """Maximum of a scalar over ranks (used so that every rank stops on a bad loss)."""
    if get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (``model`` itself otherwise)."""
    return getattr(model, "module", model)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` under DDP -> this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available")
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns True when running with more than one process. Nothing happens without
    ``WORLD_SIZE`` > 1 (a plain single-process run).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or _active():
        return get_world_size() > 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=30))
    return True


def cleanup() -> None:
    if _active():
        dist.destroy_process_group()
