"""SGD with linear warmup and multi-step decay; the rate is a pure function of the iteration
(so resuming needs no scheduler state beyond the iteration count)."""

from __future__ import annotations

from bisect import bisect_right

import torch
from torch import nn

from ..config import SolverConfig

__all__ = ["build_optimizer", "lr_at", "set_lr"]


def lr_at(cfg: SolverConfig, iteration: int) -> float:
    """Learning rate of iteration ``iteration`` (0-based).

    ``base_lr * gamma ** (number of steps <= iteration)``, times a linear warmup factor
    rising from ``warmup_factor`` to 1 over the first ``warmup_iters`` iterations.
    """
    lr = cfg.base_lr * cfg.gamma ** bisect_right(cfg.steps, iteration)
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        lr *= cfg.warmup_factor * (1 - alpha) + alpha
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr_at(cfg, 0), momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)
