"""Converters from common instance-segmentation layouts into COCO JSON."""

from .cityscapes import CITYSCAPES_INSTANCE_LABELS, cityscapes_categories, convert_cityscapes
from .coco_classes import COCO80_CAT_IDS, COCO80_NAMES, coco80_categories
from .common import write_coco_json
from .dsb2018 import convert_dsb2018
from .lvis import convert_lvis
from .yolo_seg import convert_yolo_seg

__all__ = ["CITYSCAPES_INSTANCE_LABELS", "cityscapes_categories", "convert_cityscapes",
           "COCO80_CAT_IDS", "COCO80_NAMES", "coco80_categories", "convert_dsb2018",
           "convert_lvis", "convert_yolo_seg", "write_coco_json"]
