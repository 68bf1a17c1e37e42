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


def gt_coco(instances_per_image, *, categories=(3, 7), crowd=(), shape=(H, W)):
    """COCO object; ``instances_per_image[i]`` lists ``(cat_id, mask)`` of image id i+1.

    ``crowd`` lists ``(image_index, cat_id, mask)`` crowd regions; every image is ``shape``.
    """
    images, anns = [], []
    for i, insts in enumerate(instances_per_image):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": shape[0],
                       "width": shape[1]})
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


def evaluator_cases():
    """``{name: (coco, outputs)}``: the scenarios of test_coco_evaluator.py (perfect, shifted,
    missed, false positive, wrong class, crowd, several images and classes, max_dets)."""
    several = [[(3, square(2, 2)), (7, square(20, 25, 12))], [(7, square(5, 30, 8))],
               [(3, square(10, 10))]]
    three = [square(2, 2), square(2, 20), square(20, 2)]
    crowd = square(22, 30, 15)
    return {
        "perfect": (gt_coco(several[:2]),
                    [prediction([(1, square(2, 2), 0.9), (2, square(20, 25, 12), 0.8)]),
                     prediction([(2, square(5, 30, 8), 0.7)])]),
        "shift1": (gt_coco([[(3, square(10, 10))]]),
                   [prediction([(1, square(10, 11), 0.9)])]),
        "shift2": (gt_coco([[(3, square(10, 10))]]),
                   [prediction([(1, square(10, 12), 0.9)])]),
        "missing": (gt_coco([[(3, square(2, 2)), (3, square(20, 30))]]),
                    [prediction([(1, square(2, 2), 0.9)])]),
        "false_positive": (gt_coco([[(3, square(2, 2))]]),
                           [prediction([(1, square(25, 35), 0.9), (1, square(2, 2), 0.5)])]),
        "wrong_class": (gt_coco([[(3, square(2, 2))]]),
                        [prediction([(2, square(2, 2), 0.9)])]),
        "crowd": (gt_coco([[(3, square(2, 2))]], crowd=[(0, 3, crowd)]),
                  [prediction([(1, crowd, 0.95), (1, square(2, 2), 0.5)])]),
        "no_detections": (gt_coco([[(3, square(10, 10))]]), [prediction([])]),
        "mixed": (gt_coco(several),
                  [prediction([(1, square(2, 3), 0.9), (2, square(20, 25, 12), 0.8)]),
                   prediction([(2, square(5, 31, 8), 0.7), (1, square(25, 5), 0.95)]),
                   prediction([(1, square(10, 12), 0.6)])]),
        "three_of_three": (gt_coco([[(3, m) for m in three]]),
                           [prediction([(1, m, s) for m, s in zip(three, (0.9, 0.8, 0.7),
                                                                   strict=True)])]),
    }
