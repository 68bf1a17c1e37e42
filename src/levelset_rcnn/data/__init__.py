"""COCO-format datasets, converters, the synthetic default dataset and detection transforms."""

from .coco_dataset import CocoInstanceDataset, collate_fn
from .coco_json import load_coco_json
from .errors import DatasetError
from .image_io import read_image
from .sampler import GroupedBatchSampler, aspect_ratio_groups, get_aspect_ratios
from .synthetic import make_synthetic_coco, synthetic_image_dir
from .transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge

__all__ = [
    "CocoInstanceDataset", "collate_fn", "load_coco_json", "DatasetError", "read_image",
    "GroupedBatchSampler", "aspect_ratio_groups", "get_aspect_ratios", "make_synthetic_coco",
    "synthetic_image_dir",
    "Compose", "RandomHorizontalFlip", "ResizeShortestEdge",
]
