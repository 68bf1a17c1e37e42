import random

import pytest
import torch
from torch.utils.data import RandomSampler

from levelset_rcnn.data import (
    Compose,
    GroupedBatchSampler,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    aspect_ratio_groups,
)


def _sample(h=20, w=40):
    image = torch.rand(3, h, w)
    masks = torch.zeros(1, h, w, dtype=torch.uint8)
    masks[0, 2:6, 4:10] = 1
    target = {"boxes": torch.tensor([[4.0, 2.0, 10.0, 6.0]]), "masks": masks,
              "labels": torch.tensor([1]), "area": torch.tensor([24.0]), "image_id": 1}
    return image, target


def test_flip_by_hand():
    image, target = _sample()
    out_img, out = RandomHorizontalFlip(p=1.0)(image, target)
    assert out["boxes"].tolist() == [[30.0, 2.0, 36.0, 6.0]]
    assert torch.equal(out_img[:, :, 0], image[:, :, -1])
    assert out["masks"][0, 2:6, 30:36].all() and out["masks"].sum() == 24
    assert target["boxes"].tolist() == [[4.0, 2.0, 10.0, 6.0]]  # input untouched
    assert RandomHorizontalFlip(p=0.0)(image, target)[1] is target


def test_resize_shortest_edge_by_hand():
    image, target = _sample(20, 40)
    out_img, out = ResizeShortestEdge(10)(image, target)
    assert out_img.shape == (3, 10, 20)
    assert out["boxes"].tolist() == [[2.0, 1.0, 5.0, 3.0]]
    assert out["area"].tolist() == [6.0]
    assert out["masks"].shape == (1, 10, 20) and out["masks"].dtype == torch.uint8
    assert out["masks"][0, 1:3, 2:5].all() and out["masks"].sum() == 6


def test_resize_caps_the_long_edge_and_samples_a_range():
    image, target = _sample(20, 80)
    assert ResizeShortestEdge(40, max_size=100)(image, target)[0].shape == (3, 25, 100)
    random.seed(0)
    t = ResizeShortestEdge((30, 35), max_size=1000, sample="range")
    sizes = {t(image, target)[0].shape[1] for _ in range(40)}
    assert sizes <= set(range(30, 36)) and len(sizes) > 2
    with pytest.raises(ValueError):
        ResizeShortestEdge((1, 2, 3), sample="range")


def test_compose_and_empty_targets():
    image = torch.rand(3, 8, 8)
    target = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 8, 8, dtype=torch.uint8)}
    out_img, out = Compose([RandomHorizontalFlip(1.0), ResizeShortestEdge(16)])(image, target)
    assert out_img.shape == (3, 16, 16) and out["masks"].shape == (0, 16, 16)


def test_grouped_batches_are_homogeneous_and_complete():
    ratios = [0.5, 1.5, 0.7, 2.0, 1.0, 0.9, 1.3, 0.6, 0.8, 1.1, 0.4]
    groups = aspect_ratio_groups(ratios)
    assert groups == [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0]
    gen = torch.Generator().manual_seed(0)
    sampler = GroupedBatchSampler(RandomSampler(range(11), generator=gen), groups, 3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(11))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert len(batches) == len(sampler) == 2 + 2  # 6 portrait -> 3+3, 5 landscape -> 3+2
    dropped = GroupedBatchSampler(range(11), groups, 3, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 3
