"""Shared pieces of the converters: assembling and safely writing a COCO JSON file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import DatasetError

__all__ = ["CocoBuilder", "write_coco_json", "check_output"]

logger = logging.getLogger(__name__)


def _temp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse to touch an existing output unless ``overwrite``; return ``path`` as a Path.
    A temporary file a killed earlier conversion left beside ``path`` is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to "
                              "replace it")
    _temp_path(path).unlink(missing_ok=True)
    return path


class CocoBuilder:
    """Accumulates images and annotations with sequential ids (both starting at 1)."""

    def __init__(self, categories: list[dict[str, Any]], description: str = "") -> None:
        self.categories = categories
        self.description = description
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.num_skipped = 0
        self.notes: list[str] = []       # what was left out, for the report (info.notes)
        self.verified: bool | None = None  # every image decoded (True) or headers only

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
        info: dict[str, Any] = {"description": self.description}
        if self.notes:
            info["notes"] = list(self.notes)
        if self.verified is not None:
            info["images_verified"] = self.verified
        return {"info": info, "images": self.images, "annotations": self.annotations,
                "categories": self.categories}


def write_coco_json(data: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then rename; the temporary file
    is removed on any failure). NaN and infinities are refused (they are not JSON).

    Raises:
        DatasetError: ``data`` holds a NaN or infinite number (nothing is written).
    """
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=False)
        tmp.replace(path)
    except ValueError as exc:  # allow_nan=False
        raise DatasetError(f"{path}: refusing to write a non-finite number ({exc}); "
                           "nothing was written") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
