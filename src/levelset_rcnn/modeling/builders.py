"""Model builders in torchvision's style (plain functions, keyword arguments).

* :func:`levelset_rcnn`: the generic builder (``backbone`` = ``"resnet18" | "resnet34" |
  "resnet50" | "resnet101" | "wide_resnet50_2" | "mobilenet_v3_large"``, optional deformable
  convs in ResNet stages and PANet's bottom-up path, FPN and head widths, the mask branch of
  ``mask_head_type`` (:data:`MASK_BRANCHES`) with its settings, any torchvision
  ``FasterRCNN`` keyword);
* :func:`levelset_rcnn_resnet50_fpn`, :func:`levelset_rcnn_resnet18_fpn`,
  :func:`levelset_rcnn_mobilenet_v3_large_fpn`: the named variants;
* :func:`mask_rcnn`: the Mask R-CNN baseline through the same code (``mask_head_type="binary"``),
  so that comparisons use identical backbones, RPN and box heads.

Like segment-anything's ``build_sam``, the builder makes every part with exactly the numbers it
uses and hands the built parts to :class:`LevelSetRCNN`. The keywords a mask branch takes are
read from its ``build`` signature (:func:`mask_branch_settings`), never listed a second time;
an unknown keyword is a ``TypeError`` naming it.

``weights`` (COCO Mask R-CNN: ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``, ``"DEFAULT"`` or a local
state-dict file) loads every compatible tensor; the report is logged and kept as
``model.load_report``. ``weights_backbone`` (ImageNet: an enum, ``"DEFAULT"`` or a local
torchvision state-dict file) must match the backbone exactly. No download happens unless
weights are asked for.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.models import get_model_weights, mobilenet_v3_large, resnet
from torchvision.models._api import WeightsEnum
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN_ResNet50_FPN_Weights, MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_nn_ops

from .backbones import PathAggregation, load_backbone_state_dict, make_deformable
from .levelset_rcnn import LevelSetRCNN
from .mask_branches import (
    BinaryMaskBranch,
    DELSEBranch,
    DELSEHPBranch,
    LevelSetBranch,
    LSLossBranch,
    MaskBranch,
    TSDFBranch,
)
from .weights import WeightsUnavailableError, expected_path, load_maskrcnn_weights

__all__ = [
    "BACKBONES",
    "MASK_BRANCHES",
    "detector_settings",
    "mask_branch_settings",
    "levelset_rcnn",
    "levelset_rcnn_mobilenet_v3_large_fpn",
    "levelset_rcnn_resnet18_fpn",
    "levelset_rcnn_resnet50_fpn",
    "mask_rcnn",
]

BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "mobilenet_v3_large",
)
_COCO_FILE = os.path.basename(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url)

WeightsArg = WeightsEnum | str | os.PathLike | None
_STATE_FILE_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt")

logger = logging.getLogger(__name__)

#: A recipe's ``mask_head_type`` -> the ``build(in_channels, num_classes, **settings)`` of its
#: mask branch. A new variant is one file in ``mask_branches/`` and one line here.
MASK_BRANCHES: dict[str, Callable[..., MaskBranch]] = {
    "levelset": LevelSetBranch.build,
    "tsdf": TSDFBranch.build,
    "binary": BinaryMaskBranch.build,
    "lsloss": LSLossBranch.build,
    "delse": DELSEBranch.build,
    "delse_hp": DELSEHPBranch.build,
}


def _keywords(fn: Callable[..., Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Named keyword parameters of ``fn`` and their defaults (no ``*args`` / ``**kwargs``)."""
    return {
        name: p.default for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in skip
    }


def mask_branch_settings(variant: str | None = None) -> dict[str, Any]:
    """The settings (keyword -> default) of one mask branch's ``build``, or of all of them."""
    builds = MASK_BRANCHES.values() if variant is None else [MASK_BRANCHES[variant]]
    out: dict[str, Any] = {}
    for build in builds:
        for name, default in _keywords(build, ("in_channels", "num_classes")).items():
            out.setdefault(name, default)
    return out


def detector_settings() -> dict[str, Any]:
    """torchvision ``FasterRCNN`` keywords (transform, RPN and box branch) and defaults."""
    return _keywords(FasterRCNN.__init__, ("self", "backbone", "num_classes"))


def _is_state_file(weights: object) -> bool:
    """Whether a ``weights_backbone`` value names a local file rather than an enum member."""
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return (os.path.exists(weights) or weights.endswith(_STATE_FILE_SUFFIXES)
            or "/" in weights or os.sep in weights)


def _backbone_weights(name: str, weights: WeightsEnum | str | None) -> WeightsEnum | None:
    if weights is None:
        return None
    return get_model_weights(name).verify(weights)


def _make_backbone(
    name: str, weights: WeightsEnum | None, *, trainable_layers: int | None,
    fpn_channels: int, frozen_bn: bool, progress: bool,
    state_file: str | os.PathLike | None = None, deform_stages: Sequence[int] = (),
    panet: bool = False,
) -> nn.Module:
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    ctor = mobilenet_v3_large if name == "mobilenet_v3_large" else resnet.__dict__[name]
    try:
        body = ctor(weights=weights, progress=progress, norm_layer=norm_layer)
    except Exception as err:
        if weights is None:
            raise
        raise WeightsUnavailableError(
            f"could not get backbone weights {weights} ({type(err).__name__}: {err}). Place "
            f"the file at {expected_path(weights)}, or pass weights_backbone=None"
        ) from err
    if deform_stages:
        if name == "mobilenet_v3_large":
            raise ValueError(f"deform_stages={tuple(deform_stages)} needs a ResNet backbone, "
                             f"got {name!r}")
        make_deformable(body, deform_stages)
    if state_file is not None:
        load_backbone_state_dict(body, state_file, name=name)
    if name == "mobilenet_v3_large":
        if panet:
            raise ValueError("panet needs a ResNet backbone: torchvision's mobilenet_v3_large "
                             "FPN has two levels of the same stride (32)")
        features = body.features
        stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
        stages.append(len(features) - 1)
        trainable = len(stages) if trainable_layers is None else trainable_layers
        freeze_before = len(features) if trainable == 0 else stages[len(stages) - trainable]
        for b in features[:freeze_before]:
            b.requires_grad_(False)
        used = [len(stages) - 2, len(stages) - 1]
        return BackboneWithFPN(
            features, {str(stages[k]): str(v) for v, k in enumerate(used)},
            [features[stages[i]].out_channels for i in used], fpn_channels,
        )
    trainable = 5 if trainable_layers is None else trainable_layers
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        train.append("bn1")
    for pname, p in body.named_parameters():
        if not any(pname.startswith(t) for t in train):
            p.requires_grad_(False)
    frozen = [k for k in deform_stages if f"layer{k}" not in train]
    if frozen:
        logger.warning("deformable stages %s are frozen (trainable_backbone_layers=%d): their "
                       "offsets stay zero, i.e. plain convolutions", frozen, trainable)
    c2 = body.inplanes // 8
    return BackboneWithFPN(
        body, {f"layer{k}": str(k - 1) for k in range(1, 5)},
        [c2 * 2 ** (k - 1) for k in range(1, 5)], fpn_channels,
        extra_blocks=PathAggregation(fpn_channels, 4) if panet else None,
    )


def levelset_rcnn(
    *,
    backbone: str = "resnet50",
    weights: WeightsArg = None,
    weights_backbone: WeightsEnum | str | os.PathLike | None = None,
    num_classes: int | None = None,
    trainable_backbone_layers: int | None = None,
    deform_stages: Sequence[int] = (),
    panet: bool = False,
    fpn_channels: int = 256,
    box_representation_size: int = 1024,
    mask_layers: Sequence[int] = (256, 256, 256, 256),
    mask_head_type: str = "levelset",
    mask_branch: MaskBranch | None = None,
    mask_paste: str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> LevelSetRCNN:
    """Generic builder.

    Args:
        backbone: one of :data:`BACKBONES`.
        weights: COCO Mask R-CNN weights to start from (enum, ``"DEFAULT"``, ``"COCO_V1"`` or a
            local file); compatible tensors load, the rest start fresh (``model.load_report``).
        weights_backbone: ImageNet weights for the backbone (ignored when ``weights`` is set):
            a torchvision enum / name (``"DEFAULT"``, ``"IMAGENET1K_V1"``), or a local file
            holding the torchvision model's state dict (``torch.save(resnet101().state_dict(),
            path)``); a file that does not match raises ``ValueError`` naming it and the keys.
        num_classes: including background; 91 (COCO) by default.
        trainable_backbone_layers: as torchvision (default 3 when pretrained, else all).
        deform_stages: ResNet stages (1-4) whose 3x3 convs become deformable
            (:class:`~levelset_rcnn.modeling.backbones.DeformConv2dPack`, zero offsets at the
            start, same weight keys); ``(3, 4)`` in the paper's fine+COCO setting.
        panet: add PANet's bottom-up path augmentation after the FPN
            (:class:`~levelset_rcnn.modeling.backbones.PathAggregation`).
        fpn_channels: FPN width (256 in the paper; smaller for CPU work).
        box_representation_size: width of the box head's two FC layers (1024).
        mask_layers: channels of the mask trunk's 3x3 convs (Mask R-CNN: four of 256).
        mask_head_type: the mask branch, a key of :data:`MASK_BRANCHES`: ``"levelset"`` (the
            full model), ``"tsdf"`` (Mask R-CNN on a TSDF target), ``"binary"`` (Mask R-CNN),
            or Table 3's ``"lsloss"``, ``"delse"``, ``"delse_hp"``.
        mask_branch: a ready mask branch instead (its settings are then not accepted).
        mask_paste: ``"exact"`` (float box geometry) or ``"torchvision"`` mask pasting;
            ``None``: exact for level-set branches, torchvision's for binary ones
            (:mod:`~levelset_rcnn.modeling.transform`).
        **kwargs: the settings of the mask branches (:func:`mask_branch_settings`:
            ``num_steps``, ``cv_channels``, ``truncation``, ``loss_weights``, ``detach_phi0``,
            ``mask_resolution``, ...) and torchvision ``FasterRCNN`` keywords
            (:func:`detector_settings`: ``min_size``, ``max_size``, ``box_batch_size_per_image``,
            ...). A setting of another variant than ``mask_head_type``'s is ignored, with a
            warning when it differs from its default.

    Raises:
        TypeError: a keyword that is neither.
        ValueError: an unknown ``mask_head_type`` or a bad setting (named).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if mask_branch is None and mask_head_type not in MASK_BRANCHES:
        raise ValueError(f"mask_head_type must be one of {', '.join(MASK_BRANCHES)}, got "
                         f"{mask_head_type!r}")
    every_branch = mask_branch_settings()
    detector = detector_settings()
    unknown = sorted(k for k in kwargs if k not in every_branch and k not in detector)
    if unknown:
        raise TypeError(
            f"levelset_rcnn() got unknown keyword(s) {', '.join(map(repr, unknown))}: not a "
            f"mask-branch setting ({', '.join(every_branch)}) nor a torchvision FasterRCNN "
            f"argument")
    branch_kw = {k: v for k, v in kwargs.items() if k in every_branch}
    detector_kw = {k: v for k, v in kwargs.items() if k not in every_branch}
    if mask_branch is not None and branch_kw:
        raise TypeError(f"mask_branch is given: its settings ({', '.join(branch_kw)}) cannot "
                        "be given too")
    if weights is not None:
        weights_backbone = None
        num_classes = 91 if num_classes is None else num_classes
    elif num_classes is None:
        num_classes = 91
    state_file = None
    if _is_state_file(weights_backbone):
        state_file, wb = Path(weights_backbone), None  # type: ignore[arg-type]
    else:
        wb = _backbone_weights(backbone, weights_backbone)  # type: ignore[arg-type]
    pretrained = weights is not None or wb is not None or state_file is not None
    if trainable_backbone_layers is None and pretrained:
        trainable_backbone_layers = 3
    body = _make_backbone(
        backbone, wb, trainable_layers=trainable_backbone_layers, fpn_channels=fpn_channels,
        frozen_bn=pretrained, progress=progress, state_file=state_file,
        deform_stages=tuple(deform_stages), panet=panet,
    )
    # Every part is made here, in a fixed order (box head, RPN head, mask trunk, mask branch),
    # so that a seed gives the same initial weights whatever the settings.
    if "box_head" not in detector_kw:
        detector_kw["box_head"] = TwoMLPHead(fpn_channels * 7 * 7, box_representation_size)
    if "box_predictor" not in detector_kw:
        detector_kw["box_predictor"] = FastRCNNPredictor(box_representation_size, num_classes)
    if "rpn_anchor_generator" not in detector_kw:
        detector_kw["rpn_anchor_generator"] = _anchor_generator(backbone)
    if "rpn_head" not in detector_kw:
        anchors = detector_kw["rpn_anchor_generator"].num_anchors_per_location()[0]
        detector_kw["rpn_head"] = RPNHead(body.out_channels, anchors)
    trunk = MaskRCNNHeads(body.out_channels, list(mask_layers), 1)
    if mask_branch is None:
        mask_branch = _build_branch(mask_head_type, mask_layers[-1], num_classes, branch_kw)
    mask_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14, sampling_ratio=2)
    model = LevelSetRCNN(body, None, mask_branch=mask_branch, mask_roi_pool=mask_roi_pool,
                         mask_head=trunk, mask_paste=mask_paste, **detector_kw)
    model.load_report = None
    if weights is not None:
        model.load_report = load_maskrcnn_weights(model, weights, progress=progress)
        src = str(model.load_report.source)
        if weights == MaskRCNN_ResNet50_FPN_Weights.COCO_V1 or src.endswith(_COCO_FILE):
            overwrite_eps(model, 0.0)  # as torchvision does for this legacy checkpoint
        _warn_partial_body(model.load_report, backbone)
    return model


def _anchor_generator(backbone: str) -> AnchorGenerator:
    """torchvision's anchors: 5 FPN levels of one size each, or 3 levels of 5 sizes for
    MobileNetV3 (whose FPN has fewer levels)."""
    if backbone == "mobilenet_v3_large":
        return AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
    return AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)


def _build_branch(variant: str, in_channels: int, num_classes: int,
                  settings: dict[str, Any]) -> MaskBranch:
    """The ``variant``'s mask branch with the settings it takes; the others are ignored (a
    warning names those set away from their default)."""
    own = mask_branch_settings(variant)
    others = mask_branch_settings()
    ignored = [k for k, v in settings.items() if k not in own and not _same(v, others[k])]
    if ignored:
        logger.warning("mask_head_type=%r does not use %s; ignored", variant,
                       ", ".join(f"{k}={settings[k]!r}" for k in ignored))
    build = MASK_BRANCHES[variant]
    return build(in_channels, num_classes, **{k: v for k, v in settings.items() if k in own})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def _warn_partial_body(report: Any, backbone: str) -> None:
    """Warn when detector weights initialise only part of the backbone body (e.g. the
    ResNet-50 COCO file given to a wide_resnet50_2 or resnet101 model)."""
    fresh = [k for k in (*report.missing, *report.mismatched)
             if k.startswith("backbone.body.") and ".conv_offset." not in k]
    if fresh:
        logger.warning(
            "weights %s initialise the %s body only partly: %d body tensors start fresh or "
            "were skipped for their shape (e.g. %s); for another backbone than the file's, "
            "start from weights_backbone (ImageNet) instead", report.source, backbone,
            len(fresh), fresh[0])


def levelset_rcnn_resnet50_fpn(
    *,
    weights: WeightsArg = None,
    weights_backbone: WeightsEnum | str | None = resnet.ResNet50_Weights.IMAGENET1K_V1,
    num_classes: int | None = None,
    **kwargs: Any,
) -> LevelSetRCNN:
    """LevelSet R-CNN with a ResNet-50 FPN backbone (the paper's model); see
    :func:`levelset_rcnn` for the arguments."""
    return levelset_rcnn(backbone="resnet50", weights=weights,
                         weights_backbone=weights_backbone, num_classes=num_classes, **kwargs)


def levelset_rcnn_resnet18_fpn(
    *,
    weights: WeightsArg = None,
    weights_backbone: WeightsEnum | str | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> LevelSetRCNN:
    """LevelSet R-CNN with a ResNet-18 FPN backbone (CPU work)."""
    return levelset_rcnn(backbone="resnet18", weights=weights,
                         weights_backbone=weights_backbone, num_classes=num_classes, **kwargs)


def levelset_rcnn_mobilenet_v3_large_fpn(
    *,
    weights: WeightsArg = None,
    weights_backbone: WeightsEnum | str | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> LevelSetRCNN:
    """LevelSet R-CNN with a MobileNetV3-Large FPN backbone (CPU work)."""
    return levelset_rcnn(backbone="mobilenet_v3_large", weights=weights,
                         weights_backbone=weights_backbone, num_classes=num_classes, **kwargs)


def mask_rcnn(*, mask_resolution: int = 28, **kwargs: Any) -> LevelSetRCNN:
    """Mask R-CNN baseline (binary 28x28 or 112x112 masks) through :func:`levelset_rcnn`.

    ``mask_head_type`` is ``"binary"`` whatever ``kwargs`` says (a recipe's level-set
    settings are ignored)."""
    kwargs["mask_head_type"] = "binary"
    binary = mask_branch_settings("binary")
    kwargs = {k: v for k, v in kwargs.items() if k in binary or k not in mask_branch_settings()}
    return levelset_rcnn(mask_resolution=mask_resolution, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

