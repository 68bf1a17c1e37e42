"""Evaluators with one interface (reset / process / evaluate): COCO box and mask AP and the
paper's boundary metric AF1/AF2."""

from .boundary import boundary_f_scores, mask_boundary
from .boundary_af import boundary_af
from .coco_evaluator import AP_NAMES, COCOEvaluator
from .coco_results import encode_masks, write_coco_results
from .evaluator import DatasetEvaluator, DatasetEvaluators

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "COCOEvaluator", "AP_NAMES",
           "boundary_f_scores", "mask_boundary", "boundary_af", "encode_masks",
           "write_coco_results"]
