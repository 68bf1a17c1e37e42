"""Tiny helpers for gathering evaluation state across DDP ranks (no-ops without DDP)."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

__all__ = ["world_size", "rank", "all_gather_objects"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when not distributed)."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
