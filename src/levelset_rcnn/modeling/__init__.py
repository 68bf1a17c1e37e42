"""LevelSet R-CNN models: heads, mask branches, RoI heads, the model class and builders.

Example::

    from levelset_rcnn.modeling import levelset_rcnn_resnet50_fpn
    model = levelset_rcnn_resnet50_fpn(weights="COCO_V1", num_classes=9).eval()
    out = model([image])[0]       # boxes, labels, scores, masks (K, 1, H, W) as Mask R-CNN

The paper's Table 3 competitors are one argument away: ``mask_head_type="lsloss"`` (Mask R-CNN
with the Chan-Vese energy loss), ``"delse"`` or ``"delse_hp"`` (DELSE's edge-based evolution);
each is a mask branch (:mod:`.mask_branches`).
"""

from .backbones import (
    DeformConv2dPack,
    PathAggregation,
    load_backbone_state_dict,
    make_deformable,
)
from .builders import (
    BACKBONES,
    MASK_BRANCHES,
    detector_settings,
    levelset_rcnn,
    levelset_rcnn_mobilenet_v3_large_fpn,
    levelset_rcnn_resnet18_fpn,
    levelset_rcnn_resnet50_fpn,
    mask_branch_settings,
    mask_rcnn,
)
from .heads import (
    DEFAULT_INIT,
    ChanVeseFeatureHead,
    GlobalHyperParameters,
    HighResMaskPredictor,
    HyperParameterHead,
    HyperParameters,
    LearnedFeatureHead,
    TSDFPredictor,
)
from .levelset_rcnn import LevelSetRCNN, validate_inputs
from .losses import DEFAULT_TRUNCATION, LOSS_EPS, levelset_targets, tsdf_loss
from .mask_branches import (
    BinaryMaskBranch,
    DELSEBranch,
    DELSEHPBranch,
    LevelSetBranch,
    LSLossBranch,
    MaskBranch,
    MaskTargets,
    TSDFBranch,
    mask_probabilities,
    masks_from_maps,
)
from .mask_branches.delse import (
    DELSE_CURVATURE,
    DELSE_DT,
    angular_loss,
    class_balanced_bce,
    velocity_targets,
)
from .mask_branches.lsloss import chan_vese_energy_loss
from .roi_heads import LevelSetRoIHeads
from .tta import TTAView, TTAWrapper
from .weights import LoadReport, WeightsUnavailableError, load_maskrcnn_weights

__all__ = [
    "BACKBONES",
    "DEFAULT_INIT",
    "DEFAULT_TRUNCATION",
    "DELSE_CURVATURE",
    "DELSE_DT",
    "LOSS_EPS",
    "MASK_BRANCHES",
    "BinaryMaskBranch",
    "ChanVeseFeatureHead",
    "DELSEBranch",
    "DELSEHPBranch",
    "DeformConv2dPack",
    "GlobalHyperParameters",
    "HighResMaskPredictor",
    "HyperParameterHead",
    "HyperParameters",
    "LSLossBranch",
    "LevelSetBranch",
    "LearnedFeatureHead",
    "LevelSetRCNN",
    "LevelSetRoIHeads",
    "LoadReport",
    "MaskBranch",
    "MaskTargets",
    "PathAggregation",
    "TSDFBranch",
    "TSDFPredictor",
    "TTAView",
    "TTAWrapper",
    "WeightsUnavailableError",
    "angular_loss",
    "chan_vese_energy_loss",
    "class_balanced_bce",
    "detector_settings",
    "levelset_rcnn",
    "levelset_rcnn_mobilenet_v3_large_fpn",
    "levelset_rcnn_resnet18_fpn",
    "levelset_rcnn_resnet50_fpn",
    "levelset_targets",
    "load_backbone_state_dict",
    "load_maskrcnn_weights",
    "make_deformable",
    "mask_branch_settings",
    "mask_probabilities",
    "mask_rcnn",
    "masks_from_maps",
    "tsdf_loss",
    "validate_inputs",
    "velocity_targets",
]
