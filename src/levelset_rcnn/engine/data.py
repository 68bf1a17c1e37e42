"""Datasets and loaders from a :class:`~levelset_rcnn.config.Config`, with a resumable order.

Exact resume needs the data order to be a function of the iteration alone. The training
stream is infinite: epoch ``e`` visits the images in the permutation drawn by a generator
seeded with ``(seed, e)``; every rank takes an equal, disjoint share of it (PyTorch's
``DistributedSampler`` rule: pad by wrapping, then take ``rank::world_size``); batches are
consecutive slices, the incomplete last batch of an epoch is dropped. Iteration ``i`` is
therefore batch ``i mod B`` of epoch ``i div B`` and the stream restarts at any iteration.
Random augmentations are reseeded per sample from ``(seed, epoch, index)``, so they too do
not depend on worker processes or on where a run was resumed.

With aspect-ratio grouping (``data.aspect_ratio_grouping``, for datasets that mix portrait and
landscape images) an epoch's batches are those :class:`~levelset_rcnn.data.GroupedBatchSampler`
forms from this rank's share, in the order they fill, cut to a count that every permutation
reaches; a dataset whose images are all of one orientation (the synthetic data: square) is
batched exactly as without grouping.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config import Config, ConfigError
from ..data import (
    CocoInstanceDataset,
    Compose,
    GroupedBatchSampler,
    RandomHorizontalFlip,
    aspect_ratio_groups,
    collate_fn,
    get_aspect_ratios,
    make_synthetic_coco,
    synthetic_image_dir,
)

__all__ = ["ResumableBatchSampler", "SeededDataset", "build_datasets", "build_train_loader",
           "build_val_loader", "dataset_paths"]

logger = logging.getLogger(__name__)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite per-rank batches of ``(index, sample_seed)`` starting at ``start_iter``.

    ``group_ids`` (one per item, e.g. :func:`~levelset_rcnn.data.aspect_ratio_groups`): every
    batch holds items of one group. Each epoch then has the number of full one-group batches
    that any split of this rank's share into the groups gives (at most ``groups * (batch_size
    - 1)`` items of an epoch wait for the next permutation), so the order is still a
    function of the iteration alone and every rank runs as many batches. With a single group
    (or none given) batches are consecutive slices of the share, as without grouping.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, start_iter: int = 0,
                 group_ids: Sequence[int] | None = None) -> None:
        if num_items < 1:
            raise ValueError("the training set is empty")
        if group_ids is not None and len(group_ids) != num_items:
            raise ValueError(f"{len(group_ids)} group ids for {num_items} items")
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_iter = start_iter
        per_rank = -(-num_items // world_size)
        self.batches_per_epoch = max(1, per_rank // batch_size)
        self.group_ids: list[int] | None = None
        groups = len(set(group_ids)) if group_ids is not None else 1
        if groups > 1:
            n = max(per_rank, batch_size)  # the share's length (tiny sets are repeated)
            # Fewest full batches over all splits of n items into the groups: the leftovers
            # (< batch_size in each group) total at most groups * (batch_size - 1) and are
            # congruent to n modulo batch_size.
            waiting = groups * (batch_size - 1) - n % batch_size
            full = n // batch_size - waiting // batch_size
            if full >= 1:
                self.group_ids = list(group_ids)  # type: ignore[arg-type]
                self.batches_per_epoch = full
            else:
                logger.warning("%d images per process are too few to batch %d at a time by "
                               "aspect ratio (%d groups); batches mix them", n, batch_size,
                               groups)
        self._epoch_batches: tuple[int, list[list[int]]] | None = None

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

    def grouped_batches(self, epoch: int) -> list[list[int]]:
        """This rank's one-group batches of epoch ``epoch``, in the order they fill."""
        if self._epoch_batches is None or self._epoch_batches[0] != epoch:
            batches = GroupedBatchSampler(self.epoch_indices(epoch), self.group_ids or [],
                                          self.batch_size, drop_last=True)
            self._epoch_batches = (epoch, list(batches)[:self.batches_per_epoch])
        return self._epoch_batches[1]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        epoch, b = divmod(iteration, self.batches_per_epoch)
        if self.group_ids is None:
            idx = self.epoch_indices(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        else:
            idx = self.grouped_batches(epoch)[b]
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
                       world_size: int, start_iter: int, num_workers: int,
                       aspect_ratio_grouping: bool = False) -> DataLoader:
    """Infinite loader of per-rank batches from iteration ``start_iter`` on; with
    ``aspect_ratio_grouping`` a batch never mixes portrait and landscape images (the ratios
    come from the annotation file: ``dataset`` is a :class:`CocoInstanceDataset` or a
    ``Subset`` of one)."""
    groups = aspect_ratio_groups(get_aspect_ratios(dataset)) if aspect_ratio_grouping else None
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, rank=rank,  # type: ignore[arg-type]
                                    world_size=world_size, start_iter=start_iter,
                                    group_ids=groups)
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
