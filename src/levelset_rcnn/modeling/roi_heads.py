"""``LevelSetRoIHeads``: torchvision's ``RoIHeads`` with the level-set mask branch.

torchvision's ``RoIHeads.forward`` calls its mask functions by name, so the mask branch is
replaced by overriding ``forward``; sampling (``select_training_samples``), the box branch,
``fastrcnn_loss`` and ``postprocess_detections`` are torchvision's own.

Mask branch, for the positive RoIs (training) or the detections (inference)::

    x      = mask_head(RoIAlign 14x14)                 # Mask R-CNN's trunk, (R, 256, 14, 14)
    phi_0  = up_112(tsdf_predictor(x)[label])          # (R, 1, 112, 112) in [-1, 1]
    hp     = hyper_head(x)                             # lambda1, lambda2, mu, eps_n, dt_n
    F      = feature_head(x)                           # (R, C, 112, 112)
    phi_N  = ChanVese(phi_0 (or phi_0.detach()), F, hp)

With ``cv_upsampling="implicit"`` (default) the last two lines are evaluated without making
``F``: :class:`.upsampled_cv.UpsampledChanVese` works on the feature head's 28x28 map and the
bilinear upsampling operator (same result to float round-off, several times cheaper);
``"explicit"`` makes ``F`` and runs :class:`levelset_rcnn.levelset.ChanVese` on it.

``mask_head_type`` selects the paper's variants with one code path:

* ``"levelset"``: the full model; losses ``loss_tsdf_init`` (weight ``w_0``) on ``phi_0`` and
  ``loss_tsdf_final`` (weight ``w_N``) on ``phi_N``; masks ``H_0.1(phi_N)``.
* ``"tsdf"``: Mask R-CNN with a TSDF target (no Chan-Vese): ``loss_tsdf_init`` only, masks
  ``H_0.1(phi_0)``.
* ``"binary"``: plain Mask R-CNN (``mask_predictor`` at 28x28 or 112x112): torchvision's
  ``RoIHeads.forward`` unchanged, for baselines built through the same interface.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from ..levelset import ChanVese, heaviside
from .heads import HyperParameters
from .losses import LOSS_EPS, levelset_targets, tsdf_loss
from .upsampled_cv import UpsampledChanVese

__all__ = ["DEFAULT_TRUNCATION", "LevelSetRoIHeads", "MaskHeadType"]

MaskHeadType = Literal["levelset", "tsdf", "binary"]

#: TSDF truncation in pixels of the 112x112 RoI grid. The 28x28 initial TSDF is upsampled 4x,
#: so the band must span several coarse pixels (12 px = 3 coarse pixels either side) for the
#: bilinear upsampling of a ramp to be exact; with the Heaviside width 0.1 the loss and the
#: Chan-Vese Dirac then act within ~1.2 px of the contour.
DEFAULT_TRUNCATION = 12.0


class LevelSetRoIHeads(RoIHeads):
    """RoI heads of LevelSet R-CNN (box branch from torchvision, level-set mask branch).

    The first eleven arguments are torchvision's ``RoIHeads`` ones (box branch).

    Args:
        mask_roi_pool: RoIAlign for the mask branch (14x14 output).
        mask_head: the mask trunk ``(R, C_in, 14, 14) -> (R, C_t, 14, 14)``.
        mask_predictor: binary predictor (``"binary"`` only).
        tsdf_predictor: initial TSDF head (``"levelset"`` and ``"tsdf"``).
        hyper_head: ``(R, C_t, 14, 14) -> (R, 2N + 3)`` (``"levelset"``).
        feature_head: ``(R, C_t, 14, 14) -> (R, C, M, M)`` (``"levelset"``).
        mask_head_type: ``"levelset" | "tsdf" | "binary"``.
        num_steps: ``N`` unrolled Chan-Vese steps.
        resolution: ``M``, side of ``phi_0`` / ``phi_N`` and of the targets (112).
        truncation: TSDF truncation in pixels of the ``M`` grid.
        loss_weights: ``(w_0, w_N)`` for the ``phi_0`` and ``phi_N`` losses (paper: (1, 5)
            Cityscapes, (0.2, 1) COCO).
        detach_phi0: Table 4 ablation: ``phi_N``'s loss does not reach the TSDF head.
        return_tsdf: add ``tsdf`` (``phi_N``) and ``tsdf_init`` (``phi_0``), ``(K, 1, M, M)``
            in RoI coordinates, to each inference result.
        cv_upsampling: ``"implicit"`` or ``"explicit"`` (see the module docstring).
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        *,
        mask_roi_pool: nn.Module,
        mask_head: nn.Module,
        mask_predictor: nn.Module | None = None,
        tsdf_predictor: nn.Module | None = None,
        hyper_head: nn.Module | None = None,
        feature_head: nn.Module | None = None,
        mask_head_type: MaskHeadType = "levelset",
        num_steps: int = 3,
        resolution: int = 112,
        truncation: float = DEFAULT_TRUNCATION,
        loss_weights: tuple[float, float] = (1.0, 5.0),
        detach_phi0: bool = False,
        return_tsdf: bool = False,
        cv_upsampling: str = "implicit",
    ) -> None:
        super().__init__(
            box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
            batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh,
            nms_thresh, detections_per_img, mask_roi_pool=mask_roi_pool, mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        if mask_head_type not in ("levelset", "tsdf", "binary"):
            raise ValueError(f"mask_head_type must be levelset, tsdf or binary, got "
                             f"{mask_head_type!r}")
        needed = {"binary": ("mask_predictor",), "tsdf": ("tsdf_predictor",),
                  "levelset": ("tsdf_predictor", "hyper_head", "feature_head")}[mask_head_type]
        given = {"mask_predictor": mask_predictor, "tsdf_predictor": tsdf_predictor,
                 "hyper_head": hyper_head, "feature_head": feature_head}
        missing = [n for n in needed if given[n] is None]
        if missing:
            raise ValueError(f"mask_head_type={mask_head_type!r} needs {', '.join(missing)}")
        self.mask_head_type = mask_head_type
        self.tsdf_predictor = tsdf_predictor
        self.hyper_head = hyper_head
        self.feature_head = feature_head
        if cv_upsampling not in ("implicit", "explicit"):
            raise ValueError(f"cv_upsampling must be implicit or explicit, got {cv_upsampling!r}")
        self.cv_upsampling = cv_upsampling
        self.chan_vese = (UpsampledChanVese(num_steps) if cv_upsampling == "implicit"
                          else ChanVese(num_steps))
        self.num_steps = num_steps
        self.resolution = resolution
        self.truncation = float(truncation)
        self.loss_weights = (float(loss_weights[0]), float(loss_weights[1]))
        self.detach_phi0 = detach_phi0
        self.return_tsdf = return_tsdf

    # ----------------------------------------------------------------------------------------
    def levelset_forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The level-set branch on trunk features.

        Args:
            x: ``(R, C_t, S, S)`` mask-trunk features.
            labels: ``(R,)`` int64 class of each RoI (selects the class-specific TSDF).

        Returns:
            ``phi0: (R, 1, M, M)``; in ``"levelset"`` mode also ``phiN: (R, 1, M, M)`` float32,
            ``hyper: (R, 2N + 3)`` and ``features: (R, C, M, M)``.
        """
        assert self.tsdf_predictor is not None
        coarse = self.tsdf_predictor(x)
        if coarse.shape[1] > 1:
            coarse = coarse[torch.arange(coarse.shape[0], device=coarse.device), labels]
        else:
            coarse = coarse[:, 0]
        M = self.resolution
        phi0 = F.interpolate(coarse[:, None], size=(M, M), mode="bilinear", align_corners=False)
        out = {"phi0": phi0}
        if self.mask_head_type != "levelset":
            return out
        assert self.hyper_head is not None and self.feature_head is not None
        raw = self.hyper_head(x)
        hp = HyperParameters.from_raw(raw, self.num_steps)
        if self.cv_upsampling == "implicit":
            features = self.feature_head.low_res(x)  # (R, C, 28, 28), upsampled implicitly
        else:
            features = self.feature_head(x)
        start = phi0.detach() if self.detach_phi0 else phi0
        out["phiN"] = self.chan_vese(
            start, features, lambda1=hp.lambda1, lambda2=hp.lambda2, mu=hp.mu, eps=hp.eps,
            dt=hp.dt,
        )
        out["hyper"] = raw
        out["features"] = features
        return out

    def levelset_losses(
        self, out: dict[str, Tensor], gt_masks: list[Tensor], proposals: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_tsdf_init`` (and ``loss_tsdf_final``) for the positive RoIs."""
        mask_t, tsdf_t = levelset_targets(
            gt_masks, proposals, matched_idxs, size=self.resolution, truncation=self.truncation
        )
        w0, wN = self.loss_weights
        losses = {"loss_tsdf_init": w0 * tsdf_loss(out["phi0"][:, 0], tsdf_t, mask_t)}
        if "phiN" in out:
            final = tsdf_loss(out["phiN"][:, 0], tsdf_t, mask_t)
            if out["phiN"].shape[0] == 0:
                # Keep every head in the graph (DDP) when a batch has no positive RoI.
                final = final + 0.0 * (out["hyper"].sum() + out["features"].sum())
            losses["loss_tsdf_final"] = wN * final
        return losses

    # ----------------------------------------------------------------------------------------
    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Same contract as torchvision's ``RoIHeads.forward``.

        Inference results hold ``boxes, labels, scores`` and ``masks: (K, 1, M, M)``
        probabilities in RoI coordinates (pasted into the image by the transform), plus
        ``tsdf`` and ``tsdf_init`` when ``return_tsdf``.
        """
        if self.mask_head_type == "binary":
            return super().forward(features, proposals, image_shapes, targets)
        if targets is not None:
            for t in targets:
                if not t["boxes"].is_floating_point():
                    raise TypeError(f"target boxes must be float, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be int64, got {t['labels'].dtype}")

        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_proposals = [p[i] for p, i in zip(proposals, positive, strict=True)]
            pos_matched = [m[i] for m, i in zip(matched_idxs, positive, strict=True)]
            roi_labels = torch.cat([lab[i] for lab, i in zip(labels, positive, strict=True)])
        else:
            boxes, scores, det_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [{"boxes": b, "labels": lab, "scores": s}
                      for b, lab, s in zip(boxes, det_labels, scores, strict=True)]
            mask_proposals = boxes
            roi_labels = torch.cat(det_labels)

        x = self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes))
        out = self.levelset_forward(x, roi_labels)

        if self.training:
            assert targets is not None
            gt_masks = [t["masks"] for t in targets]
            losses.update(self.levelset_losses(out, gt_masks, mask_proposals, pos_matched))
            return result, losses

        final = out.get("phiN", out["phi0"]).float()
        masks = heaviside(final, LOSS_EPS)
        counts = [len(b) for b in mask_proposals]
        for r, m, phi_n, phi_0 in zip(result, masks.split(counts), final.split(counts),
                                      out["phi0"].float().split(counts), strict=True):
            r["masks"] = m
            if self.return_tsdf:
                r["tsdf"] = phi_n
                r["tsdf_init"] = phi_0
        return result, losses
