"""Small hand-built ground truths and predictions for the evaluator tests."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from levelset_rcnn.data.coco_json import coco_from_dict

H, W = 40, 50


def square(r0: int, c0: int, size: int = 10, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    m[r0:r0 + size, c0:c0 + size] = 1
    return m


def gt_coco(instances_per_image, *, categories=(3, 7), crowd=()):
    """COCO object; ``instances_per_image[i]`` lists ``(cat_id, mask)`` of image id i+1.

    ``crowd`` lists ``(image_index, cat_id, mask)`` crowd regions.
    """
    images, anns = [], []
    for i, insts in enumerate(instances_per_image):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": H, "width": W})
        for cat, m in insts:
            anns.append((i + 1, cat, m, 0))
    for i, cat, m in crowd:
        anns.append((i + 1, cat, m, 1))
    records = []
    for k, (img, cat, m, crowd_flag) in enumerate(anns):
        rle = mask_utils.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        ys, xs = np.nonzero(m)
        bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        records.append({"id": k + 1, "image_id": img, "category_id": cat, "segmentation": rle,
                        "area": float(m.sum()), "bbox": bbox, "iscrowd": crowd_flag})
    cats = [{"id": c, "name": f"c{c}"} for c in categories]
    return coco_from_dict({"images": images, "annotations": records, "categories": cats})


def prediction(items):
    """Torchvision-style output from ``[(label, mask (H, W), score), ...]``.

    The box is the mask's extent in xyxy pixel-edge coordinates.
    """
    boxes, labels, scores, masks = [], [], [], []
    for label, m, score in items:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
        scores.append(score)
        masks.append(m.astype(np.float32)[None])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, 1, H, W)}


LABEL_TO_CAT = {1: 3, 2: 7}
