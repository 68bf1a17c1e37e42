"""The 80 COCO object classes in YOLO index order, with COCO's own category ids (1-90)."""

from __future__ import annotations

__all__ = ["COCO80_NAMES", "COCO80_CAT_IDS", "coco80_categories"]

COCO80_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# COCO 2014/2017 category ids: 1-90 with 10 ids unused (12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
COCO80_CAT_IDS: tuple[int, ...] = tuple(
    i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))

_SUPER = (
    [(1, 1, "person"), (2, 9, "vehicle"), (10, 15, "outdoor"), (16, 25, "animal"),
     (27, 33, "accessory"), (34, 43, "sports"), (44, 51, "kitchen"), (52, 61, "food"),
     (62, 71, "furniture"), (72, 77, "electronic"), (78, 83, "appliance"), (84, 90, "indoor")])


def _supercategory(cat_id: int) -> str:
    for lo, hi, name in _SUPER:
        if lo <= cat_id <= hi:
            return name
    raise KeyError(cat_id)


def coco80_categories() -> list[dict]:
    """COCO ``categories`` records for the 80 classes (``id``, ``name``, ``supercategory``)."""
    return [{"id": i, "name": n, "supercategory": _supercategory(i)}
            for i, n in zip(COCO80_CAT_IDS, COCO80_NAMES, strict=True)]
