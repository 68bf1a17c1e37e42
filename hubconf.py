"""torch.hub entry points: the model builders of :mod:`levelset_rcnn.modeling.builders`.

Example (from a clone; ``source="github"`` with ``owner/repo`` works the same way)::

    import torch
    model = torch.hub.load("path/to/levelset-rcnn", "levelset_rcnn_resnet50_fpn",
                           source="local", weights_backbone=None, num_classes=3)
    model.eval()

Every builder takes the keywords of :func:`levelset_rcnn.modeling.levelset_rcnn` (``weights``,
``weights_backbone``, ``num_classes``, mask-branch settings, torchvision ``FasterRCNN``
arguments); ``weights="COCO_V1"`` starts from torchvision's COCO Mask R-CNN. Trained files of
``levelset-rcnn train`` load with :func:`levelset_rcnn.engine.load_trained_model`.

The installed ``levelset_rcnn`` is used, else this repository's ``src/``; the package's own
requirements (``pip install -e .``: scikit-image for the contours, among others) are needed
beyond the two listed in ``dependencies``.
"""

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision"]

_SRC = _Path(__file__).resolve().parent / "src"
if _util.find_spec("levelset_rcnn") is None and _SRC.is_dir():
    _sys.path.insert(0, str(_SRC))

from levelset_rcnn.modeling.builders import (  # noqa: E402
    levelset_rcnn,
    levelset_rcnn_mobilenet_v3_large_fpn,
    levelset_rcnn_resnet18_fpn,
    levelset_rcnn_resnet50_fpn,
    mask_rcnn,
)

__all__ = ["dependencies", "levelset_rcnn", "levelset_rcnn_mobilenet_v3_large_fpn",
           "levelset_rcnn_resnet18_fpn", "levelset_rcnn_resnet50_fpn", "mask_rcnn"]
