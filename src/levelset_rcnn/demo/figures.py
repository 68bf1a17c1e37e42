"""Figures of the demo's report: phi_0 evolving into phi_N, loss curve."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.models.detection.transform import resize_boxes  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

from ..comm import unwrap  # noqa: E402

__all__ = ["capture_evolution", "compare_instances", "comparison_figure", "evolution_figure",
           "loss_figure"]


@torch.inference_mode()
def capture_evolution(model: nn.Module, image: Tensor, *, max_instances: int = 4
                      ) -> dict[str, Any]:
    """Every Chan-Vese iterate ``phi_0 .. phi_N`` of the top detections of one image.

    Runs the model in eval mode, then its mask branch once more on the top detections with
    ``return_all=True`` (:class:`~levelset_rcnn.modeling.mask_branches.LevelSetBranch`);
    a branch without iterates gives ``[phi_0, phi_N]``.

    Returns ``{"boxes": (K, 4), "scores": (K,), "labels": (K,), "phis": (K, N+1, M, M),
    "crops": (K, 3, M, M)}`` (the image resampled inside each box, for display).
    """
    m = unwrap(model).eval()
    device = next(m.parameters()).device
    (out,) = m([image.to(device)], return_tsdf=True)
    k = min(max_instances, len(out["scores"]))
    boxes = out["boxes"][:k].float()
    branch = m.roi_heads.mask_branch
    if "return_all" in inspect.signature(branch.forward).parameters:
        images, _ = m.transform([image.to(device)])
        features = m.head_features(m.backbone(images.tensors), images)
        size = images.image_sizes[0]
        rois = resize_boxes(boxes, list(image.shape[-2:]), list(size))
        steps = m.roi_heads.branch_outputs(features, [rois], [size], out["labels"][:k],
                                           return_all=True)["phis"]
    else:
        steps = [out["tsdf_init"][:k], out["tsdf"][:k]]
    phis = torch.stack([p[:, 0] for p in steps], dim=1).float().cpu()
    boxes = boxes.cpu()
    crops = roi_align(image[None].float(), [boxes], output_size=phis.shape[-1], aligned=True) \
        if k else torch.zeros(0)
    return {"boxes": boxes, "scores": out["scores"][:k].cpu(), "labels": out["labels"][:k].cpu(),
            "phis": phis, "crops": crops}


def evolution_figure(samples: Sequence[dict[str, Any]], path: str | Path, *,
                     class_names: Sequence[str] | None = None) -> Path | None:
    """One row per instance: the image inside its box with the zero level sets of phi_0
    (dashed) and phi_N (solid), then phi_0 .. phi_N as signed-distance maps with their zero
    contour. Returns None when there is no instance to draw."""
    rows = [(s, i) for s in samples for i in range(len(s["scores"]))]
    if not rows:
        return None
    n_phi = rows[0][0]["phis"].shape[1]
    fig, axes = plt.subplots(len(rows), n_phi + 1, figsize=(2.1 * (n_phi + 1), 2.2 * len(rows)),
                             squeeze=False)
    for r, (s, i) in enumerate(rows):
        phis = s["phis"][i].numpy()
        crop = s["crops"][i].permute(1, 2, 0).clamp(0, 1).numpy()
        ax = axes[r, 0]
        ax.imshow(crop)
        # phi_N first, phi_0 dashed on top: where the two nearly coincide (small refinements)
        # the red still shows between the cyan dashes instead of hiding them.
        ax.contour(phis[-1], levels=[0.0], colors=["#ff3050"], linewidths=1.6)
        ax.contour(phis[0], levels=[0.0], colors=["#00c8ff"], linestyles="dashed",
                   linewidths=1.2)
        label = int(s["labels"][i])
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        ax.set_title(f"{name} {float(s['scores'][i]):.2f}", fontsize=8)
        for n in range(n_phi):
            ax = axes[r, n + 1]
            ax.imshow(phis[n], cmap="RdBu_r", vmin=-1, vmax=1)
            ax.contour(phis[n], levels=[0.0], colors=["k"], linewidths=0.8)
            if r == 0:
                ax.set_title(f"phi_{n}" if n < n_phi - 1 else f"phi_{n} = phi_N", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("phi_0 (dashed cyan) -> phi_N (solid red), RoI coordinates", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_figure(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Training losses against the iteration (a 10-step moving average)."""
    keys = [k for k in history[0] if k.startswith("loss")] if history else []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    its = np.array([h["iteration"] for h in history])
    for k in keys:
        v = np.array([h[k] for h in history])
        w = min(10, len(v))
        smooth = np.convolve(v, np.ones(w) / w, mode="valid")
        ax.plot(its[w - 1:], smooth, label=k, lw=1.5 if k == "loss" else 0.9)
    ax.set_xlabel("iteration")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@torch.inference_mode()
def compare_instances(model: nn.Module, baseline: nn.Module, image: Tensor,
                      target: dict[str, Tensor], *, score_thresh: float = 0.5
                      ) -> dict[str, Any]:
    """The same detections seen by both mask heads: for the LevelSet model's detections of
    one image (``baseline`` shares its frozen detector, so it finds the same boxes), the RoI
    maps of both on the 112x112 RoI grid and their IoU with the ground truth projected there.

    Returns ``{"crops": (K, 3, 112, 112), "gt": (K, 112, 112) bool, "baseline": (K, S, S)
    probabilities, "phi0", "phiN": (K, 112, 112), "iou": {"baseline", "phi0", "phiN": (K,)},
    "labels", "scores": (K,)}``.
    """
    from torchvision.models.detection.transform import resize_boxes
    from torchvision.ops import box_iou

    from ..modeling.losses import project_masks

    m, b = unwrap(model).eval(), unwrap(baseline).eval()
    device = next(m.parameters()).device
    (out,) = m([image.to(device)])
    keep = out["scores"] >= score_thresh
    boxes, labels = out["boxes"][keep].float(), out["labels"][keep]
    maps = {}
    for name, net in (("levelset", m), ("baseline", b)):
        images, _ = net.transform([image.to(device)])
        features = net.head_features(net.backbone(images.tensors), images)
        size = images.image_sizes[0]
        rois = resize_boxes(boxes, list(image.shape[-2:]), list(size))
        maps[name] = net.roi_heads.mask_maps(features, [rois], [size], [labels])
    M = maps["levelset"]["tsdf"].shape[-1]
    gt_masks = target["masks"].to(device)
    if len(boxes) and len(gt_masks):
        match = box_iou(boxes, target["boxes"].to(device)).argmax(1)
        gt = project_masks(gt_masks, boxes, match, M) >= 0.5
    else:
        gt = torch.zeros(len(boxes), M, M, dtype=torch.bool, device=device)
    probs = maps["baseline"]["mask_probs"][:, 0]
    up = torch.nn.functional.interpolate(probs[:, None], size=(M, M), mode="bilinear",
                                         align_corners=False)[:, 0]
    phi0, phiN = maps["levelset"]["tsdf_init"][:, 0], maps["levelset"]["tsdf"][:, 0]

    def iou(pred: Tensor) -> Tensor:
        inter = (pred & gt).flatten(1).sum(1).float()
        union = (pred | gt).flatten(1).sum(1).float().clamp_min(1)
        return inter / union

    crops = roi_align(image[None].float().to(device), [boxes], output_size=M, aligned=True) \
        if len(boxes) else torch.zeros(0, 3, M, M)
    return {"crops": crops.cpu(), "gt": gt.cpu(), "baseline": probs.cpu(), "phi0": phi0.cpu(),
            "phiN": phiN.cpu(),
            "iou": {"baseline": iou(up > 0.5).cpu(), "phi0": iou(phi0 > 0).cpu(),
                    "phiN": iou(phiN > 0).cpu()},
            "labels": labels.cpu(), "scores": out["scores"][keep].cpu()}


def comparison_figure(samples: Sequence[dict[str, Any]], path: str | Path, *,
                      num_rows: int = 4) -> Path | None:
    """The instances where phi_N gains most over both the 28x28 mask and phi_0 (IoU with the
    ground truth on the RoI grid), one row each: the crop with the ground-truth outline, Mask
    R-CNN's 28x28 mask, and the crop with the phi_0 and the phi_N contours."""
    rows = []
    for s in samples:
        for i in range(len(s["scores"])):
            gain = float(s["iou"]["phiN"][i] - max(s["iou"]["baseline"][i], s["iou"]["phi0"][i]))
            rows.append((gain, s, i))
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: -r[0])[:num_rows]
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.2 * len(rows)), squeeze=False)
    for r, (_, s, i) in enumerate(rows):
        crop = s["crops"][i].permute(1, 2, 0).clamp(0, 1).numpy()
        gt = s["gt"][i].numpy().astype(float)
        panels = [("image, ground truth", None), (
            f"Mask R-CNN 28x28 (IoU {100 * float(s['iou']['baseline'][i]):.0f})", "baseline"),
            (f"phi_0 (IoU {100 * float(s['iou']['phi0'][i]):.0f})", "phi0"),
            (f"phi_N (IoU {100 * float(s['iou']['phiN'][i]):.0f})", "phiN")]
        for c, (title, key) in enumerate(panels):
            ax = axes[r, c]
            if key == "baseline":
                ax.imshow(s["baseline"][i].numpy(), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
                S = s["baseline"].shape[-1]
                gt_small = torch.nn.functional.interpolate(
                    s["gt"][i][None, None].float(), size=(S, S), mode="area")[0, 0].numpy()
                ax.contour(gt_small, levels=[0.5], colors=["#30d030"], linewidths=1.0)
            else:
                ax.imshow(crop)
                ax.contour(gt, levels=[0.5], colors=["#30d030"], linewidths=1.0)
                if key is not None:
                    color = "#00c8ff" if key == "phi0" else "#ff3050"
                    ax.contour(s[key][i].numpy(), levels=[0.0], colors=[color],
                               linewidths=1.5)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Same detections: ground truth (green) against Mask R-CNN's 28x28 mask, "
                 "phi_0 (cyan) and phi_N (red)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
