"""Learning-rate schedule and the resumable, sharded data order."""

from __future__ import annotations

import pytest

from levelset_rcnn.config import SolverConfig
from levelset_rcnn.engine import ResumableBatchSampler, lr_at


def test_warmup_then_step_decay() -> None:
    cfg = SolverConfig(base_lr=0.02, steps=[60, 80], gamma=0.1, warmup_iters=10,
                       warmup_factor=0.001)
    assert lr_at(cfg, 0) == pytest.approx(0.02 * 0.001)
    assert lr_at(cfg, 5) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lr_at(cfg, 10) == pytest.approx(0.02)
    assert lr_at(cfg, 59) == pytest.approx(0.02)
    assert lr_at(cfg, 60) == pytest.approx(0.002)
    assert lr_at(cfg, 80) == pytest.approx(0.0002)


def test_order_depends_on_iteration_only() -> None:
    s = ResumableBatchSampler(10, 3, seed=7)
    it = iter(s)
    first = [next(it) for _ in range(8)]  # crosses epochs (3 batches per epoch)
    resumed = iter(ResumableBatchSampler(10, 3, seed=7, start_iter=5))
    assert [next(resumed) for _ in range(3)] == first[5:]
    epoch0 = [i for b in first[:3] for i, _ in b]
    assert len(set(epoch0)) == 9  # no repeats within an epoch
    assert first[:3] != first[3:6]  # a new permutation each epoch
    assert ResumableBatchSampler(10, 3, seed=8).batch(0) != first[0]


def test_ranks_take_disjoint_shares() -> None:
    a = ResumableBatchSampler(8, 2, seed=0, rank=0, world_size=2)
    b = ResumableBatchSampler(8, 2, seed=0, rank=1, world_size=2)
    ia = {i for k in range(2) for i, _ in a.batch(k)}
    ib = {i for k in range(2) for i, _ in b.batch(k)}
    assert ia.isdisjoint(ib) and ia | ib == set(range(8))
