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
from torchvision.ops import roi_align  # noqa: E402

from ..comm import unwrap  # noqa: E402

__all__ = ["capture_evolution", "evolution_figure", "loss_figure"]


@torch.inference_mode()
def capture_evolution(model: nn.Module, image: Tensor, *, max_instances: int = 4
                      ) -> dict[str, Any]:
    """Every Chan-Vese iterate ``phi_0 .. phi_N`` of the top detections of one image.

    Runs the model in eval mode with a forward hook on its Chan-Vese module that re-runs it
    with ``return_all=True`` on the same inputs.

    Returns ``{"boxes": (K, 4), "scores": (K,), "labels": (K,), "phis": (K, N+1, M, M),
    "crops": (K, 3, M, M)}`` (the image resampled inside each box, for display).
    """
    m = unwrap(model).eval()
    cv = m.roi_heads.chan_vese
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: Tensor) -> None:
        # module.forward, not module(...): no re-entry into this hook.
        if "return_all" in inspect.signature(module.forward).parameters:
            phis = list(module.forward(*args, **{**kwargs, "return_all": True}))
        else:  # iterate n = 0..N by truncating the unrolled loop
            total, phis = module.num_steps, []
            try:
                for n in range(total + 1):
                    module.num_steps = n
                    phis.append(module.forward(*args, **kwargs))
            finally:
                module.num_steps = total
        captured.append(torch.stack([p[:, 0] for p in phis], dim=1).float().cpu())

    handle = cv.register_forward_hook(hook, with_kwargs=True)
    try:
        (out,) = m([image.to(next(m.parameters()).device)])
    finally:
        handle.remove()
    k = min(max_instances, len(out["scores"]))
    phis = captured[0][:k] if captured else torch.zeros(0)
    boxes = out["boxes"][:k].float().cpu()
    size = phis.shape[-1] if k else 1
    crops = roi_align(image[None].float(), [boxes], output_size=size, aligned=True) if k \
        else torch.zeros(0)
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
