"""Shared pieces of the converters: assembling and safely writing a COCO JSON file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["CocoBuilder", "write_coco_json", "check_output"]

logger = logging.getLogger(__name__)


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse to touch an existing output unless ``overwrite``; return ``path`` as a Path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to "
                              "replace it")
    return path


class CocoBuilder:
    """Accumulates images and annotations with sequential ids (both starting at 1)."""

    def __init__(self, categories: list[dict[str, Any]], description: str = "") -> None:
        self.categories = categories
        self.description = description
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.num_skipped = 0

    def add_image(self, file_name: str, height: int, width: int, image_id: int | None = None
                  ) -> int:
        image_id = len(self.images) + 1 if image_id is None else image_id
        self.images.append({"id": image_id, "file_name": file_name, "height": height,
                            "width": width})
        return image_id

    def add_annotation(self, image_id: int, category_id: int, segmentation: list | dict, *,
                       area: float, bbox: list[float]) -> int:
        ann_id = len(self.annotations) + 1
        self.annotations.append({"id": ann_id, "image_id": image_id, "category_id": category_id,
                                 "segmentation": segmentation, "area": float(area),
                                 "bbox": [float(v) for v in bbox], "iscrowd": 0})
        return ann_id

    def skip(self, reason: str) -> None:
        """Log a skipped record (first ten in full) and count it."""
        self.num_skipped += 1
        if self.num_skipped <= 10:
            logger.warning("skipping %s", reason)

    def to_dict(self) -> dict[str, Any]:
        return {"info": {"description": self.description}, "images": self.images,
                "annotations": self.annotations, "categories": self.categories}


def write_coco_json(data: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then rename)."""
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    tmp.replace(path)
    return path
