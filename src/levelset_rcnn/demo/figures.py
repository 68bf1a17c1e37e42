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

__all__ = ["capture_evolution", "evolution_figure", "loss_figure"]


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
        features = m.backbone(images.tensors)
        size = images.image_sizes[0]
        rois = resize_boxes(boxes, list(image.shape[-2:]), list(size))
        x = m.roi_heads.mask_head(m.roi_heads.mask_roi_pool(features, [rois], [size]))
        steps = branch(x, out["labels"][:k], return_all=True)["phis"]
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
