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

The paper's Table 3 competitors share the trunk, the TSDF head, the targets and the inference
output:

* ``"lsloss"``: Mask R-CNN (``mask_predictor``, torchvision's ``maskrcnn_loss`` as
  ``loss_mask``) plus the Chan-Vese energy of its shifted output as ``loss_levelset``
  (:func:`.losses.chan_vese_energy_loss`, weight ``lsloss_weight``); inference is Mask
  R-CNN's (28x28 probabilities).
* ``"delse"`` / ``"delse_hp"``: DELSE's edge-based evolution (:mod:`.delse`) of ``phi_0``
  with a velocity head and a modulation head (``velocity_head``, ``modulation_head``), hand-set
  step sizes and DELSE's losses (``"delse"``: ``loss_tsdf_init`` = L2, ``loss_tsdf_final`` =
  class-balanced BCE) or the hyperparameter head and ``tsdf_loss`` (``"delse_hp"``); both add
  ``loss_velocity`` (weight ``velocity_loss_weight``). Outputs as ``"levelset"``: masks
  ``H_0.1(phi_N)``, and ``tsdf`` / ``tsdf_init``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_inference,
    maskrcnn_loss,
)

from ..levelset import ChanVese, heaviside
from .delse import (
    DELSE_CURVATURE,
    DELSE_DT,
    angular_loss,
    class_balanced_bce,
    delse_evolve,
    normalise_velocity,
    velocity_targets,
)
from .heads import HyperParameters
from .losses import (
    LOSS_EPS,
    LSLOSS_EPS,
    LSLOSS_MU,
    chan_vese_energy_loss,
    levelset_targets,
    project_masks,
    tsdf_loss,
)
from .upsampled_cv import UpsampledChanVese

__all__ = ["DEFAULT_TRUNCATION", "MASK_HEAD_TYPES", "LevelSetRoIHeads", "MaskHeadType"]

MaskHeadType = Literal["levelset", "tsdf", "binary", "lsloss", "delse", "delse_hp"]
#: Every ``mask_head_type`` and the sub-modules it needs.
MASK_HEAD_TYPES: dict[str, tuple[str, ...]] = {
    "levelset": ("tsdf_predictor", "hyper_head", "feature_head"),
    "tsdf": ("tsdf_predictor",),
    "binary": ("mask_predictor",),
    "lsloss": ("mask_predictor",),
    "delse": ("tsdf_predictor", "velocity_head", "modulation_head"),
    "delse_hp": ("tsdf_predictor", "velocity_head", "modulation_head", "hyper_head"),
}
#: The variants whose output refines an initial TSDF (``phi_0`` reported beside ``phi_N``).
REFINING_TYPES = ("levelset", "delse", "delse_hp")

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
        mask_predictor: binary predictor (``"binary"``, ``"lsloss"``).
        tsdf_predictor: initial TSDF head (all but ``"binary"`` / ``"lsloss"``).
        hyper_head: ``(R, C_t, 14, 14) -> (R, 2N + 3)`` (``"levelset"``, ``"delse_hp"``).
        feature_head: ``(R, C_t, 14, 14) -> (R, C, M, M)`` (``"levelset"``).
        velocity_head: ``(R, C_t, 14, 14) -> (R, 2, M, M)`` (DELSE variants).
        modulation_head: ``(R, C_t, 14, 14) -> (R, 1, M, M)`` logits of ``g`` (DELSE).
        mask_head_type: one of :data:`MASK_HEAD_TYPES` (see the module docstring).
        num_steps: ``N`` unrolled Chan-Vese steps.
        resolution: ``M``, side of ``phi_0`` / ``phi_N`` and of the targets (112).
        truncation: TSDF truncation in pixels of the ``M`` grid.
        loss_weights: ``(w_0, w_N)`` for the ``phi_0`` and ``phi_N`` losses (paper: (1, 5)
            Cityscapes, (0.2, 1) COCO).
        detach_phi0: Table 4 ablation: ``phi_N``'s loss does not reach the TSDF head.
        return_tsdf: add ``tsdf`` (``phi_N``) and ``tsdf_init`` (``phi_0``), ``(K, 1, M, M)``
            in RoI coordinates, to each inference result.
        cv_upsampling: ``"implicit"`` or ``"explicit"`` (see the module docstring).
        delse_dt: DELSE step in pixels of the ``M`` grid (``"delse"``; the base that the
            hyperparameter head multiplies in ``"delse_hp"``).
        delse_curvature: DELSE curvature gain ``c`` (idem).
        velocity_loss_weight: weight of ``loss_velocity`` (DELSE variants).
        lsloss_weight, lsloss_eps, lsloss_mu: weight, Heaviside width and length weight of
            the Chan-Vese energy loss (``"lsloss"``).
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
        velocity_head: nn.Module | None = None,
        modulation_head: nn.Module | None = None,
        mask_head_type: MaskHeadType = "levelset",
        num_steps: int = 3,
        resolution: int = 112,
        truncation: float = DEFAULT_TRUNCATION,
        loss_weights: tuple[float, float] = (1.0, 5.0),
        detach_phi0: bool = False,
        return_tsdf: bool = False,
        cv_upsampling: str = "implicit",
        delse_dt: float = DELSE_DT,
        delse_curvature: float = DELSE_CURVATURE,
        velocity_loss_weight: float = 1.0,
        lsloss_weight: float = 1.0,
        lsloss_eps: float = LSLOSS_EPS,
        lsloss_mu: float = LSLOSS_MU,
    ) -> None:
        super().__init__(
            box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
            batch_size_per_image, positive_fraction, bbox_reg_weights, score_thresh,
            nms_thresh, detections_per_img, mask_roi_pool=mask_roi_pool, mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        if mask_head_type not in MASK_HEAD_TYPES:
            raise ValueError(f"mask_head_type must be one of {', '.join(MASK_HEAD_TYPES)}, got "
                             f"{mask_head_type!r}")
        needed = MASK_HEAD_TYPES[mask_head_type]
        given = {"mask_predictor": mask_predictor, "tsdf_predictor": tsdf_predictor,
                 "hyper_head": hyper_head, "feature_head": feature_head,
                 "velocity_head": velocity_head, "modulation_head": modulation_head}
        missing = [n for n in needed if given[n] is None]
        if missing:
            raise ValueError(f"mask_head_type={mask_head_type!r} needs {', '.join(missing)}")
        self.mask_head_type = mask_head_type
        self.tsdf_predictor = tsdf_predictor
        self.hyper_head = hyper_head
        self.feature_head = feature_head
        self.velocity_head = velocity_head
        self.modulation_head = modulation_head
        for name, value in (("delse_dt", delse_dt), ("lsloss_eps", lsloss_eps)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (("delse_curvature", delse_curvature),
                            ("velocity_loss_weight", velocity_loss_weight),
                            ("lsloss_weight", lsloss_weight), ("lsloss_mu", lsloss_mu)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        self.delse_dt = float(delse_dt)
        self.delse_curvature = float(delse_curvature)
        self.velocity_loss_weight = float(velocity_loss_weight)
        self.lsloss_weight = float(lsloss_weight)
        self.lsloss_eps = float(lsloss_eps)
        self.lsloss_mu = float(lsloss_mu)
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
            ``hyper: (R, 2N + 3)`` and ``features: (R, C, M, M)``; in the DELSE modes
            ``phiN``, ``velocity: (R, 2, M, M)`` (raw), ``modulation: (R, 1, M, M)`` (``g``)
            and, for ``"delse_hp"``, ``hyper``.
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
        if self.mask_head_type in ("delse", "delse_hp"):
            out.update(self.delse_forward(x, phi0))
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

    def delse_forward(self, x: Tensor, phi0: Tensor) -> dict[str, Tensor]:
        """DELSE's heads and unrolled evolution (:mod:`.delse`) from ``phi0: (R, 1, M, M)``."""
        assert self.velocity_head is not None and self.modulation_head is not None
        M = self.resolution
        velocity = self.velocity_head(x)
        g = torch.sigmoid(self.modulation_head(x))
        if velocity.shape[-1] != M or g.shape[-1] != M:
            raise ValueError(f"velocity / modulation heads must output {M}x{M} maps, got "
                             f"{tuple(velocity.shape)} / {tuple(g.shape)}")
        R, N = phi0.shape[0], self.num_steps
        out = {"velocity": velocity, "modulation": g}
        dt: Tensor = phi0.new_full((R, N), self.delse_dt, dtype=torch.float32)
        advection: Tensor | float = 1.0
        gain: Tensor | float = self.delse_curvature
        if self.mask_head_type == "delse_hp":
            assert self.hyper_head is not None
            raw = self.hyper_head(x)
            hp = HyperParameters.from_raw(raw, N)
            dt = self.delse_dt * hp.dt
            advection = hp.lambda1
            gain = self.delse_curvature * hp.mu
            out["hyper"] = raw
        start = phi0.detach() if self.detach_phi0 else phi0
        out["phiN"] = delse_evolve(start, normalise_velocity(velocity.float()), g, dt,
                                   advection=advection, curvature_gain=gain)
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
        if self.mask_head_type in ("delse", "delse_hp"):
            return self.delse_losses(out, mask_t, tsdf_t)
        losses = {"loss_tsdf_init": w0 * tsdf_loss(out["phi0"][:, 0], tsdf_t, mask_t)}
        if "phiN" in out:
            final = tsdf_loss(out["phiN"][:, 0], tsdf_t, mask_t)
            if out["phiN"].shape[0] == 0:
                # Keep every head in the graph (DDP) when a batch has no positive RoI.
                final = final + 0.0 * (out["hyper"].sum() + out["features"].sum())
            losses["loss_tsdf_final"] = wN * final
        return losses

    def delse_losses(self, out: dict[str, Tensor], mask_t: Tensor,
                     tsdf_t: Tensor) -> dict[str, Tensor]:
        """``loss_tsdf_init``, ``loss_tsdf_final`` and ``loss_velocity`` of the DELSE modes:
        DELSE's (L2, class-balanced BCE) for ``"delse"``, ``tsdf_loss`` for ``"delse_hp"``."""
        w0, wN = self.loss_weights
        phi0, phiN = out["phi0"][:, 0], out["phiN"][:, 0]
        if self.mask_head_type == "delse":
            init = (phi0.float() - tsdf_t).square().mean() if phi0.numel() else phi0.sum() * 0
            final = class_balanced_bce(phiN, mask_t, eps=LOSS_EPS)
        else:
            init = tsdf_loss(phi0, tsdf_t, mask_t)
            final = tsdf_loss(phiN, tsdf_t, mask_t)
        v_t, valid = velocity_targets(tsdf_t, self.truncation)
        velocity = angular_loss(out["velocity"], v_t, valid)
        if phiN.shape[0] == 0:
            # Keep every head in the graph (DDP) when a batch has no positive RoI.
            keep = out["modulation"].sum() + out.get("hyper", phiN).sum()
            final = final + 0.0 * keep
        return {"loss_tsdf_init": w0 * init, "loss_tsdf_final": wN * final,
                "loss_velocity": self.velocity_loss_weight * velocity}

    def lsloss_losses(
        self, mask_logits: Tensor, roi_labels: Tensor, gt_masks: list[Tensor],
        gt_labels: list[Tensor], proposals: list[Tensor], matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """``loss_mask`` (torchvision's Mask R-CNN loss) and ``loss_levelset`` (the Chan-Vese
        energy of the shifted output, the ground truth projected on the RoIs as ``u_0``)."""
        loss_mask = maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs)
        S = mask_logits.shape[-1]
        logits = mask_logits[torch.arange(roi_labels.shape[0], device=roi_labels.device),
                             roi_labels]
        image = torch.cat([project_masks(m, p, i, S) for m, p, i in
                           zip(gt_masks, proposals, matched_idxs, strict=True)])
        energy = chan_vese_energy_loss(logits, image, eps=self.lsloss_eps, mu=self.lsloss_mu)
        return {"loss_mask": loss_mask, "loss_levelset": self.lsloss_weight * energy}

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
        if self.mask_head_type == "lsloss":
            assert self.mask_predictor is not None
            mask_logits = self.mask_predictor(x)
            if self.training:
                assert targets is not None
                losses.update(self.lsloss_losses(
                    mask_logits, roi_labels, [t["masks"] for t in targets],
                    [t["labels"] for t in targets],
                    mask_proposals, pos_matched))
                return result, losses
            for r, m in zip(result, maskrcnn_inference(mask_logits, det_labels), strict=True):
                r["masks"] = m
            return result, losses
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
