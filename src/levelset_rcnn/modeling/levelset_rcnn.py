"""``LevelSetRCNN``: torchvision's ``MaskRCNN`` with :class:`LevelSetRoIHeads`.

Same inputs and output dict as Mask R-CNN (``boxes, labels, scores, masks``; masks are
``(K, 1, H, W)`` probabilities pasted by torchvision's transform), plus, on request, ``tsdf``
and ``tsdf_init`` (``(K, 1, 112, 112)`` in RoI coordinates) and ``contours`` (per instance, a
list of ``(n, 2)`` float64 ``(x, y)`` closed polygons in original image coordinates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from ..levelset import tsdf_to_polygons
from .delse import DELSE_CURVATURE, DELSE_DT, DELSE_HP_INIT
from .heads import (
    ChanVeseFeatureHead,
    GlobalHyperParameters,
    HighResMaskPredictor,
    HyperParameterHead,
    TSDFPredictor,
)
from .losses import LSLOSS_EPS, LSLOSS_MU
from .roi_heads import (
    DEFAULT_TRUNCATION,
    MASK_HEAD_TYPES,
    REFINING_TYPES,
    LevelSetRoIHeads,
    MaskHeadType,
)

__all__ = ["LevelSetRCNN", "validate_inputs"]


def validate_inputs(images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]) -> None:
    """Raise a ``ValueError`` / ``TypeError`` that names the problem for malformed targets.

    Checks: one target per image; ``boxes (N, 4)`` float, ``labels (N,)`` int64 and
    ``masks (N, H, W)`` with the same ``N`` and the image's ``H, W``; boxes of positive area.
    """
    if len(targets) != len(images):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets; "
                         "pass exactly one target dict per image")
    for i, (img, t) in enumerate(zip(images, targets, strict=True)):
        for key in ("boxes", "labels", "masks"):
            if key not in t:
                raise ValueError(f"target {i} has no {key!r} (keys: {sorted(t)})")
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: boxes must be (N, 4), got {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(f"target {i}: boxes must be float, got {boxes.dtype}")
        if labels.dtype != torch.int64:
            raise TypeError(f"target {i}: labels must be int64, got {labels.dtype}")
        n = boxes.shape[0]
        if labels.shape != (n,) or masks.dim() != 3 or masks.shape[0] != n:
            raise ValueError(
                f"target {i}: mismatched lengths: boxes {tuple(boxes.shape)}, labels "
                f"{tuple(labels.shape)}, masks {tuple(masks.shape)} (need N, N, N x H x W)"
            )
        if tuple(masks.shape[-2:]) != tuple(img.shape[-2:]):
            raise ValueError(
                f"target {i}: masks are {tuple(masks.shape[-2:])} but the image is "
                f"{tuple(img.shape[-2:])}; masks must be full-image (N, H, W)"
            )
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bool(bad.any()):
            j = int(torch.where(bad)[0][0])
            raise ValueError(f"target {i}: box {j} {boxes[j].tolist()} has zero or negative "
                             "area (need x0 < x1 and y0 < y1)")


class LevelSetRCNN(MaskRCNN):
    """LevelSet R-CNN (or one of its ablations / the Mask R-CNN baseline).

    Args:
        backbone: a backbone with ``out_channels`` (e.g. ResNet + FPN).
        num_classes: classes including background (``None`` if ``box_predictor`` is given).
        mask_head_type: ``"levelset"`` (full model), ``"tsdf"`` (Mask R-CNN trained on a TSDF
            target, no Chan-Vese), ``"binary"`` (Mask R-CNN), or the paper's Table 3
            competitors ``"lsloss"`` (Mask R-CNN plus the Chan-Vese energy loss), ``"delse"``
            (DELSE, hand-set hyperparameters and DELSE's losses) and ``"delse_hp"`` (DELSE with
            the hyperparameter head and our TSDF loss); see :mod:`.roi_heads`, :mod:`.delse`.
        mask_resolution: ``"binary"`` / ``"lsloss"`` masks: 28 (Mask R-CNN) or 112 (the
            high-resolution ablation).
        mask_layers: channels of the mask trunk's 3x3 convs (Mask R-CNN: four of 256).
        predictor_channels: hidden channels of the 28x28 TSDF / mask predictor (256).
        class_agnostic: one initial TSDF for every class instead of one per class.
        hyperparams: ``"head"`` (per instance, the paper) or ``"global"`` (ablation).
        hyper_init: initial hyperparameters (see :data:`.heads.DEFAULT_INIT`; for
            ``"delse_hp"`` the default is :data:`.delse.DELSE_HP_INIT`, multipliers of 1).
        num_steps: unrolled Chan-Vese steps ``N`` (3).
        cv_channels: Chan-Vese feature channels ``C`` (64).
        cv_hidden_channels: channels of the feature head's 28x28 layer (64).
        resolution: side ``M`` of ``phi_0``, ``phi_N``, features and targets (112).
        truncation: TSDF truncation in pixels of the ``M`` grid.
        loss_weights: ``(w_0, w_N)``; paper (1, 5) on Cityscapes, (0.2, 1) on COCO.
        detach_phi0: Table 4 ablation.
        return_tsdf: add ``tsdf`` / ``tsdf_init`` to inference results.
        return_contours: add ``contours`` (costs CPU time: marching squares per instance).
        cv_upsampling: ``"implicit"`` (default: Chan-Vese on the 28x28 features and the exact
            bilinear operator, never making the 112x112 map) or ``"explicit"``.
        delse_dt: DELSE step in pixels of the ``resolution`` grid (:data:`.delse.DELSE_DT`,
            2 px; the base the hyperparameter head multiplies in ``"delse_hp"``).
        delse_curvature: DELSE curvature gain (:data:`.delse.DELSE_CURVATURE`, 0.5).
        velocity_loss_weight: weight of the DELSE velocity loss (1).
        lsloss_weight, lsloss_eps, lsloss_mu: the LS-loss baseline's energy weight (1),
            Heaviside width (0.1) and length weight (0.01), see :mod:`.losses`.
        mask_roi_pool, mask_head, tsdf_predictor, hyper_head, feature_head, mask_predictor,
        velocity_head, modulation_head: custom sub-modules (``None``: the defaults of
            :mod:`.heads` built from the arguments above). ``mask_head`` must keep the 14x14
            size and output ``mask_layers[-1]`` channels.
        **kwargs: torchvision ``FasterRCNN`` arguments (``min_size``, ``max_size``, RPN and box
            settings).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int | None = None,
        *,
        mask_head_type: MaskHeadType = "levelset",
        mask_resolution: int = 28,
        mask_layers: Sequence[int] = (256, 256, 256, 256),
        predictor_channels: int = 256,
        class_agnostic: bool = False,
        hyperparams: Literal["head", "global"] = "head",
        hyper_init: Mapping[str, float] | None = None,
        num_steps: int = 3,
        cv_channels: int = 64,
        cv_hidden_channels: int = 64,
        resolution: int = 112,
        truncation: float = DEFAULT_TRUNCATION,
        loss_weights: tuple[float, float] = (1.0, 5.0),
        detach_phi0: bool = False,
        return_tsdf: bool = False,
        return_contours: bool = False,
        cv_upsampling: str = "implicit",
        delse_dt: float = DELSE_DT,
        delse_curvature: float = DELSE_CURVATURE,
        velocity_loss_weight: float = 1.0,
        lsloss_weight: float = 1.0,
        lsloss_eps: float = LSLOSS_EPS,
        lsloss_mu: float = LSLOSS_MU,
        mask_roi_pool: MultiScaleRoIAlign | None = None,
        mask_head: nn.Module | None = None,
        tsdf_predictor: nn.Module | None = None,
        hyper_head: nn.Module | None = None,
        feature_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        velocity_head: nn.Module | None = None,
        modulation_head: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        # MaskRCNN.__init__ would build its own 28x28 predictor; build the box branch only.
        FasterRCNN.__init__(self, backbone, num_classes, **kwargs)
        if mask_head_type not in MASK_HEAD_TYPES:
            raise ValueError(f"mask_head_type must be one of {', '.join(MASK_HEAD_TYPES)}, got "
                             f"{mask_head_type!r}")
        if hyperparams not in ("head", "global"):
            raise ValueError(f"hyperparams must be 'head' or 'global', got {hyperparams!r}")
        if mask_resolution not in (28, 112):
            raise ValueError(f"mask_resolution must be 28 or 112, got {mask_resolution}")
        old = self.roi_heads
        n_cls = old.box_predictor.cls_score.out_features
        if mask_roi_pool is None:
            mask_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14,
                                               sampling_ratio=2)
        trunk = mask_head or MaskRCNNHeads(backbone.out_channels, list(mask_layers), 1)
        t_ch = mask_layers[-1]
        heads: dict[str, nn.Module | None] = {}
        needed = MASK_HEAD_TYPES[mask_head_type]
        if "mask_predictor" in needed:
            heads["mask_predictor"] = mask_predictor or (
                MaskRCNNPredictor(t_ch, predictor_channels, n_cls) if mask_resolution == 28
                else HighResMaskPredictor(t_ch, n_cls, hidden_channels=predictor_channels)
            )
        else:
            heads["tsdf_predictor"] = tsdf_predictor or TSDFPredictor(
                t_ch, n_cls, hidden_channels=predictor_channels, class_agnostic=class_agnostic
            )
        if "hyper_head" in needed:
            if hyper_init is None and mask_head_type == "delse_hp":
                hyper_init = DELSE_HP_INIT
            heads["hyper_head"] = hyper_head or (
                HyperParameterHead(t_ch, num_steps, init=hyper_init) if hyperparams == "head"
                else GlobalHyperParameters(num_steps, init=hyper_init)
            )
        if "feature_head" in needed:
            heads["feature_head"] = feature_head or ChanVeseFeatureHead(
                t_ch, out_channels=cv_channels, hidden_channels=cv_hidden_channels,
                out_size=resolution,
            )
        if "velocity_head" in needed:
            # DELSE's two extra heads: the feature head's layout (28x28 convs, bilinear to M).
            heads["velocity_head"] = velocity_head or ChanVeseFeatureHead(
                t_ch, out_channels=2, hidden_channels=cv_hidden_channels, out_size=resolution)
            heads["modulation_head"] = modulation_head or ChanVeseFeatureHead(
                t_ch, out_channels=1, hidden_channels=cv_hidden_channels, out_size=resolution)
        self.roi_heads = LevelSetRoIHeads(
            old.box_roi_pool, old.box_head, old.box_predictor,
            old.proposal_matcher.high_threshold, old.proposal_matcher.low_threshold,
            old.fg_bg_sampler.batch_size_per_image, old.fg_bg_sampler.positive_fraction,
            old.box_coder.weights, old.score_thresh, old.nms_thresh, old.detections_per_img,
            mask_roi_pool=mask_roi_pool, mask_head=trunk, mask_head_type=mask_head_type,
            num_steps=num_steps, resolution=resolution, truncation=truncation,
            loss_weights=loss_weights, detach_phi0=detach_phi0, cv_upsampling=cv_upsampling,
            delse_dt=delse_dt, delse_curvature=delse_curvature,
            velocity_loss_weight=velocity_loss_weight, lsloss_weight=lsloss_weight,
            lsloss_eps=lsloss_eps, lsloss_mu=lsloss_mu, **heads,
        )
        self.mask_head_type = mask_head_type
        self.return_tsdf = return_tsdf
        self.return_contours = return_contours

    @property
    def refines_initial_tsdf(self) -> bool:
        """Whether the masks refine an initial TSDF ``phi_0`` (``"levelset"``, ``"delse"``,
        ``"delse_hp"``): the engine then evaluates ``H_0.1(phi_0)`` beside the final masks."""
        return self.mask_head_type in REFINING_TYPES

    def forward(  # type: ignore[override]
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Any]]:
        """Training: ``images`` and ``targets`` -> loss dict. Inference: ``images`` -> one
        result dict per image (torchvision's Mask R-CNN keys, plus the requested extras)."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        if targets is not None:
            validate_inputs(images, targets)
        want_tsdf = self.return_tsdf or self.return_contours
        if want_tsdf and self.mask_head_type in ("binary", "lsloss"):
            raise ValueError(f"tsdf / contours need a TSDF head; mask_head_type="
                             f"{self.mask_head_type!r} predicts binary masks")
        self.roi_heads.return_tsdf = want_tsdf
        out = super().forward(images, targets)
        if self.training:
            return out
        for r in out:
            if self.return_contours:
                r["contours"] = tsdf_to_polygons(r["tsdf"], r["boxes"])
            if not self.return_tsdf:
                r.pop("tsdf", None)
                r.pop("tsdf_init", None)
        return out
