"""A batch sampler that only batches images of similar aspect ratio (less padding)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import Sampler, Subset

__all__ = ["GroupedBatchSampler", "aspect_ratio_groups", "get_aspect_ratios"]


def get_aspect_ratios(dataset: Any) -> list[float]:
    """Width / height of every item of ``dataset`` without decoding images.

    Works for any dataset with a ``get_aspect_ratios()`` method (such as
    :class:`~levelset_rcnn.data.CocoInstanceDataset`) and for ``torch.utils.data.Subset``
    views of one (nested subsets included).
    """
    if isinstance(dataset, Subset):
        parent = get_aspect_ratios(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    if hasattr(dataset, "get_aspect_ratios"):
        return list(dataset.get_aspect_ratios())
    raise TypeError(f"{type(dataset).__name__} has no get_aspect_ratios(); group its images "
                    "yourself and pass group_ids to GroupedBatchSampler")


def aspect_ratio_groups(aspect_ratios: Sequence[float], bins: Sequence[float] = (1.0,)
                        ) -> list[int]:
    """Group id per image: the index of the ``bins`` interval its width/height falls in.

    The default splits portrait (< 1) from landscape and square (>= 1) images.
    """
    edges = sorted(bins)
    return [bisect.bisect_right(edges, r) for r in aspect_ratios]


class GroupedBatchSampler(Sampler[list[int]]):
    """Wrap a sampler; yield batches whose indices all share one group id.

    Indices are buffered per group in the order the wrapped sampler gives them; a batch is
    emitted as soon as its group holds ``batch_size`` indices. Leftovers are emitted at the
    end as smaller batches, unless ``drop_last``.

    Args:
        sampler: yields dataset indices (e.g. ``RandomSampler``, ``DistributedSampler``).
        group_ids: group of every dataset index (see :func:`aspect_ratio_groups`).
        batch_size: images per batch.
        drop_last: drop the incomplete batch of each group.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int], group_ids: Sequence[int],
                 batch_size: int, *, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for idx in self.sampler:
            buf = buffers.setdefault(self.group_ids[idx], [])
            buf.append(idx)
            if len(buf) == self.batch_size:
                yield buf[:]
                buf.clear()
        if not self.drop_last:
            for buf in buffers.values():
                if buf:
                    yield buf[:]

    def __len__(self) -> int:
        counts: dict[int, int] = {}
        for idx in self.sampler:
            counts[self.group_ids[idx]] = counts.get(self.group_ids[idx], 0) + 1
        if self.drop_last:
            return sum(n // self.batch_size for n in counts.values())
        return sum(-(-n // self.batch_size) for n in counts.values())
