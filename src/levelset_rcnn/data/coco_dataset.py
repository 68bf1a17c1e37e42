"""COCO-format instance segmentation dataset returning torchvision detection targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .coco_json import coco_from_dict, load_coco_json
from .errors import DatasetError
from .image_io import read_image
from .masks import decode_segmentation

__all__ = ["CocoInstanceDataset", "collate_fn"]

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


def collate_fn(batch: list[tuple[Any, ...]]) -> tuple[tuple[Any, ...], ...]:
    """Detection collate: ``[(img, tgt), ...] -> ((img, ...), (tgt, ...))`` (no stacking)."""
    return tuple(zip(*batch, strict=True))


class CocoInstanceDataset(Dataset):
    """Instances from a COCO JSON file (polygons or RLE), as torchvision detection models take.

    ``ds[i] -> (image, target)`` with ``image: (3, H, W) float32`` in [0, 1] and ``target``:

    - ``boxes``: ``(N, 4) float32`` xyxy in pixels,
    - ``labels``: ``(N,) int64`` contiguous 1..K (0 is background),
    - ``masks``: ``(N, H, W) uint8``,
    - ``image_id``: ``int``, ``area``: ``(N,) float32``, ``iscrowd``: ``(N,) int64``.

    Images with no annotations are kept (``N = 0``, negatives). With ``train=True`` crowd
    regions are left out of the targets; with ``train=False`` they are kept, flagged by
    ``iscrowd``. Category ids are mapped to labels in ascending id order; map back with
    :attr:`label_to_cat_id`. Unusable annotations are skipped with a warning at load time
    (:attr:`num_skipped`); ``strict=True`` raises instead.

    Args:
        image_dir: folder that ``file_name`` entries are relative to.
        ann_file: COCO instances JSON.
        transforms: callable ``(image, target) -> (image, target)`` applied last.
        train: leave crowd regions out of the targets.
        strict: raise :class:`DatasetError` on any unusable annotation.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, *,
                 transforms: Transform | None = None, train: bool = True,
                 strict: bool = False) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transforms = transforms
        self.train = train
        loaded = load_coco_json(self.ann_file, strict=strict)
        self.num_skipped = loaded.num_skipped
        self.coco = coco_from_dict(loaded.data)
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.label_to_cat_id: dict[int, int] = {i + 1: c["id"] for i, c in enumerate(cats)}
        self.cat_id_to_label: dict[int, int] = {c: lab for lab, c in self.label_to_cat_id.items()}
        self.class_names: list[str] = ["__background__"] + [c["name"] for c in cats]
        self.ids: list[int] = sorted(self.coco.imgs)

    @property
    def num_classes(self) -> int:
        """Number of classes including background (what torchvision's ``num_classes`` wants)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def get_aspect_ratios(self) -> list[float]:
        """Width / height of every image, in dataset order, from the JSON (no decoding)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def load_image(self, index: int) -> torch.Tensor:
        """The image of ``ds[index]``: ``(3, H, W) float32`` in [0, 1]."""
        info = self.coco.imgs[self.ids[index]]
        path = self.image_dir / info["file_name"]
        image = read_image(path, record=f"image id {info['id']} of {self.ann_file}")
        h, w = image.shape[-2:]
        if (h, w) != (info["height"], info["width"]):
            raise DatasetError(f"{path}: image is {w}x{h} but {self.ann_file} says image id "
                               f"{info['id']} is {info['width']}x{info['height']}")
        return image

    def load_target(self, index: int) -> Target:
        """The target of ``ds[index]`` before transforms (see the class docstring)."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        anns = self.coco.imgToAnns.get(image_id, [])
        if self.train:
            anns = [a for a in anns if not a["iscrowd"]]
        masks = np.zeros((len(anns), h, w), dtype=np.uint8)
        for k, ann in enumerate(anns):
            masks[k] = decode_segmentation(ann["segmentation"], h, w)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return {
            "boxes": boxes,
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns],
                                   dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": int(image_id),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([a["iscrowd"] for a in anns], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image, target = self.load_image(index), self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
