"""Datasets and loaders from a :class:`~levelset_rcnn.config.Config`, with a resumable order.

Exact resume needs the data order to be a function of the iteration alone. The training
stream is infinite: epoch ``e`` visits the images in the permutation drawn by a generator
seeded with ``(seed, e)``; every rank takes an equal, disjoint share of it (PyTorch's
``DistributedSampler`` rule: pad by wrapping, then take ``rank::world_size``); batches are
consecutive slices, the incomplete last batch of an epoch is dropped. Iteration ``i`` is
therefore batch ``i mod B`` of epoch ``i div B`` and the stream restarts at any iteration.
Random augmentations are reseeded per sample from ``(seed, epoch, index)``, so they too do
not depend on worker processes or on where a run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config import Config, ConfigError
from ..data import (
    CocoInstanceDataset,
    Compose,
    RandomHorizontalFlip,
    collate_fn,
    make_synthetic_coco,
    synthetic_image_dir,
)

__all__ = ["ResumableBatchSampler", "SeededDataset", "build_datasets", "build_train_loader",
           "build_val_loader", "dataset_paths"]


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite per-rank batches of ``(index, sample_seed)`` starting at ``start_iter``."""

    def __init__(self, num_items: int, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0) -> None:
        if num_items < 1:
            raise ValueError("the training set is empty")
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_iter = start_iter
        per_rank = -(-num_items // world_size)
        self.batches_per_epoch = max(1, per_rank // batch_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's share of epoch ``epoch``'s permutation."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.num_items, generator=g).tolist()
        total = -(-self.num_items // self.world_size) * self.world_size
        perm = (perm * (-(-total // len(perm))))[:total]
        mine = perm[self.rank::self.world_size]
        if len(mine) < self.batch_size:  # tiny datasets: repeat within the epoch
            mine = (mine * (-(-self.batch_size // len(mine))))[:self.batch_size]
        return mine

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        epoch, b = divmod(iteration, self.batches_per_epoch)
        idx = self.epoch_indices(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return [(i, _sample_seed(self.seed, epoch, i)) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs its transforms with Python's,
    numpy's and torch's generators seeded by ``seed`` (restored afterwards)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py, npy = random.getstate(), np.random.get_state()  # noqa: NPY002 (the global state other code uses)
        try:
            with torch.random.fork_rng(devices=[]):  # CPU generator only, restored on exit
                torch.default_generator.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state other code uses)
                return self.dataset[index]
        finally:
            random.setstate(py)
            np.random.set_state(npy)  # noqa: NPY002 (the global state other code uses)


def dataset_paths(cfg: Config, *, generate: bool = True) -> dict[str, tuple[Path, Path]]:
    """``{"train": (image_dir, ann), "val": (image_dir, ann)}``; generates synthetic data."""
    d = cfg.data
    if d.synthetic:
        root = Path(d.root)
        out = {}
        for split, n, offset in (("train", d.synthetic_train_images, 0),
                                 ("val", d.synthetic_val_images, 1)):
            ann = root / f"{split}.json"
            if generate:
                ann = make_synthetic_coco(root, num_images=n, image_size=d.synthetic_image_size,
                                          seed=d.synthetic_seed * 2 + offset, split_name=split)
            out[split] = (synthetic_image_dir(ann), ann)
        return out
    out = {}
    for split, images, ann in (("train", d.train_images, d.train_ann),
                               ("val", d.val_images, d.val_ann)):
        if ann:
            out[split] = (Path(images), Path(ann))
    return out


def _subset(ds: CocoInstanceDataset, *, first: int | None = None, last: int | None = None
            ) -> Dataset:
    if first is not None:
        return Subset(ds, list(range(min(first, len(ds)))))
    if last is not None:
        return Subset(ds, list(range(max(0, len(ds) - last), len(ds))))
    return ds


def build_datasets(cfg: Config, *, splits: tuple[str, ...] = ("train", "val")
                   ) -> dict[str, Dataset]:
    """Training (flip augmentation, crowds left out) and validation datasets."""
    paths = dataset_paths(cfg)
    out: dict[str, Dataset] = {}
    for split in splits:
        if split not in paths:
            raise ConfigError(f"no {split} dataset configured: set data.{split}_ann and "
                              f"data.{split}_images (or data.synthetic=true)")
        images, ann = paths[split]
        if split == "train":
            tf = Compose([RandomHorizontalFlip(cfg.data.hflip_prob)]) \
                if cfg.data.hflip_prob > 0 else None
            ds = CocoInstanceDataset(images, ann, transforms=tf, train=True)
            out[split] = _subset(ds, first=cfg.data.train_first)
        else:
            ds = CocoInstanceDataset(images, ann, train=False)
            out[split] = _subset(ds, last=cfg.data.val_last)
    return out


def base_dataset(ds: Dataset) -> CocoInstanceDataset:
    """The :class:`CocoInstanceDataset` under a ``Subset``."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds  # type: ignore[return-value]


def build_train_loader(dataset: Dataset, *, batch_size: int, seed: int, rank: int,
                       world_size: int, start_iter: int, num_workers: int) -> DataLoader:
    """Infinite loader of per-rank batches from iteration ``start_iter`` on."""
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, rank=rank,  # type: ignore[arg-type]
                                    world_size=world_size, start_iter=start_iter)
    return DataLoader(SeededDataset(dataset), batch_sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                      persistent_workers=False)


def build_val_loader(dataset: Dataset, *, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, max_images: int | None = None) -> DataLoader:
    """One pass over this rank's share (``rank::world_size``), one image per batch."""
    n = len(dataset)  # type: ignore[arg-type]
    if max_images is not None:
        n = min(n, max_images)
    return DataLoader(Subset(dataset, list(range(rank, n, world_size))), batch_size=1,
                      collate_fn=collate_fn, num_workers=num_workers, shuffle=False)
