"""Learning-rate schedule and the resumable, sharded data order (grouped by aspect ratio or
not)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from levelset_rcnn.config import SolverConfig
from levelset_rcnn.data import CocoInstanceDataset
from levelset_rcnn.engine import ResumableBatchSampler, build_datasets, build_train_loader, lr_at

from .conftest import tiny_config


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


@pytest.mark.parametrize("num_items, batch_size, world_size", [(10, 3, 1), (9, 2, 2), (2, 3, 1)])
def test_one_group_is_batched_as_without_grouping(num_items: int, batch_size: int,
                                                  world_size: int) -> None:
    for rank in range(world_size):
        plain = ResumableBatchSampler(num_items, batch_size, seed=3, rank=rank,
                                      world_size=world_size)
        one = ResumableBatchSampler(num_items, batch_size, seed=3, rank=rank,
                                    world_size=world_size, group_ids=[1] * num_items)
        assert one.batches_per_epoch == plain.batches_per_epoch
        assert [one.batch(k) for k in range(10)] == [plain.batch(k) for k in range(10)]


def test_grouped_batches_are_of_one_group_and_resumable() -> None:
    groups = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1]  # 7 portrait, 10 landscape
    samplers = [ResumableBatchSampler(17, 3, seed=5, rank=r, world_size=2, group_ids=groups)
                for r in range(2)]
    # 9 per rank, 3 a batch, 2 groups: 2 full batches whatever the split (4 + 5 gives 1 + 1).
    assert [s.batches_per_epoch for s in samplers] == [2, 2]
    for s in samplers:
        batches = [[i for i, _ in s.batch(k)] for k in range(12)]  # six epochs
        assert all(len(b) == 3 and len({groups[i] for i in b}) == 1 for b in batches)
        for e in range(6):
            epoch = [i for b in batches[2 * e:2 * e + 2] for i in b]
            assert len(set(epoch)) == len(epoch)  # no image twice in an epoch
        resumed = iter(ResumableBatchSampler(17, 3, seed=5, rank=s.rank, world_size=2,
                                             group_ids=groups, start_iter=7))
        assert [next(resumed) for _ in range(4)] == [s.batch(k) for k in range(7, 11)]
    both = {i for s in samplers for k in range(40) for i, _ in s.batch(k)}
    assert both == set(range(17))  # leftovers wait for a later permutation, none is lost
    tiny = ResumableBatchSampler(2, 2, seed=0, group_ids=[0, 1])  # too few to group
    assert tiny.group_ids is None and tiny.batches_per_epoch == 1


def _mixed_dataset(root: Path) -> CocoInstanceDataset:
    """Six landscape (24 x 16) and five portrait (16 x 24) images, one square each."""
    images, anns = [], []
    for k in range(11):
        w, h = (24, 16) if k % 2 == 0 else (16, 24)
        Image.fromarray(np.full((h, w, 3), 40 * (k % 5), np.uint8)).save(root / f"{k}.png")
        images.append({"id": k + 1, "file_name": f"{k}.png", "width": w, "height": h})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0,
                     "segmentation": [[2, 2, 8, 2, 8, 8, 2, 8]], "area": 36.0,
                     "bbox": [2, 2, 6, 6]})
    ann = root / "mixed.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "square"}]}))
    return CocoInstanceDataset(root, ann)


def test_train_loader_never_mixes_landscape_and_portrait(tmp_path: Path) -> None:
    ds = _mixed_dataset(tmp_path)
    loader = build_train_loader(ds, batch_size=2, seed=0, rank=0, world_size=1, start_iter=0,
                                num_workers=0, aspect_ratio_grouping=True)
    shapes = []
    for _, (images, _targets) in zip(range(12), loader, strict=False):
        kinds = {"landscape" if img.shape[-1] > img.shape[-2] else "portrait" for img in images}
        assert len(images) == 2 and len(kinds) == 1
        shapes.append(kinds.pop())
    assert set(shapes) == {"landscape", "portrait"}
    plain = build_train_loader(ds, batch_size=2, seed=0, rank=0, world_size=1, start_iter=0,
                               num_workers=0)
    assert plain.batch_sampler.group_ids is None


def test_synthetic_training_order_is_unchanged_by_grouping(tiny_data_root: Path,
                                                           tmp_path: Path) -> None:
    cfg = tiny_config(tiny_data_root, tmp_path)
    assert cfg.data.aspect_ratio_grouping  # on by default, and a no-op on square images
    train = build_datasets(cfg, splits=("train",))["train"]
    kwargs = dict(batch_size=2, seed=cfg.train.seed, rank=0, world_size=1, start_iter=0,
                  num_workers=0)
    grouped = build_train_loader(train, aspect_ratio_grouping=True, **kwargs).batch_sampler
    plain = build_train_loader(train, aspect_ratio_grouping=False, **kwargs).batch_sampler
    assert grouped.group_ids is None
    assert [grouped.batch(k) for k in range(9)] == [plain.batch(k) for k in range(9)]
