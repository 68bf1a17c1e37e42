"""Evaluators with one interface (reset / process / evaluate): COCO box and mask AP, the
paper's boundary metric AF1/AF2, the official Cityscapes instance-level AP / AP50 and LVIS
federated AP (AP*)."""

from ..data.lvis_json import COCO_LVIS_SYNSETS, LVISFormatError
from ..data.masks import encode_masks
from .boundary import boundary_f_scores, mask_boundary
from .boundary_af import boundary_af
from .cityscapes_evaluator import CityscapesEvaluator, run_cityscapes_evaluation
from .coco_evaluator import AP_NAMES, COCOEvaluator
from .coco_results import write_coco_results
from .evaluator import DatasetEvaluator, DatasetEvaluators
from .lvis_evaluator import LVIS_AP_NAMES, LVISEvaluator

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "COCOEvaluator", "AP_NAMES",
           "boundary_f_scores", "mask_boundary", "boundary_af", "encode_masks",
           "write_coco_results", "CityscapesEvaluator", "run_cityscapes_evaluation",
           "LVISEvaluator", "LVISFormatError", "COCO_LVIS_SYNSETS", "LVIS_AP_NAMES"]
