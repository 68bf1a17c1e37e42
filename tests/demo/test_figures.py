"""The demo's figures from fabricated iterates and a loss history."""

from __future__ import annotations

from pathlib import Path

import torch

from levelset_rcnn.demo import evolution_figure, loss_figure


def _sample(k: int, steps: int = 3, size: int = 16) -> dict:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    circle = 5.0 - ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()  # a signed distance
    phis = torch.stack([circle + 0.5 * n for n in range(steps + 1)])[None].repeat(k, 1, 1, 1)
    return {"phis": phis / 8, "crops": torch.rand(k, 3, size, size),
            "scores": torch.linspace(0.9, 0.5, k), "labels": torch.ones(k, dtype=torch.int64)}


def test_evolution_figure_writes_a_png_or_nothing(tmp_path: Path) -> None:
    path = evolution_figure([_sample(2), _sample(1)], tmp_path / "evo.png",
                            class_names=["__background__", "disc"])
    assert path == tmp_path / "evo.png" and path.stat().st_size > 0
    assert evolution_figure([_sample(0)], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_loss_figure(tmp_path: Path) -> None:
    history = [{"iteration": i, "loss": 2.0 / i, "loss_mask": 1.0 / i, "lr": 0.01}
               for i in range(1, 25)]
    path = loss_figure(history, tmp_path / "losses.png")
    assert path.stat().st_size > 0


def test_compare_instances_scores_both_heads_on_the_same_boxes(tmp_path: Path) -> None:
    """Both heads see the LevelSet model's boxes; the IoUs are those of the maps against the
    projected ground truth (recomputed here for phi_N), and the figure picks the rows."""
    from torchvision.ops import box_iou

    from levelset_rcnn.demo import compare_instances, comparison_figure
    from levelset_rcnn.modeling import levelset_rcnn, mask_rcnn
    from levelset_rcnn.modeling.losses import project_masks

    from ..modeling.common import synthetic_sample, tiny_kwargs

    torch.manual_seed(0)
    model = levelset_rcnn(**tiny_kwargs()).eval()
    baseline = mask_rcnn(**tiny_kwargs()).eval()
    model.roi_heads.score_thresh = 0.0
    image, target = synthetic_sample(3, seed=1)
    s = compare_instances(model, baseline, image, target, score_thresh=0.0)
    K = len(s["scores"])
    assert K > 0
    assert s["phiN"].shape == s["phi0"].shape == (K, 112, 112)
    assert s["baseline"].shape == (K, 28, 28) and s["crops"].shape == (K, 3, 112, 112)
    with torch.no_grad():
        out = model([image])[0]
    match = box_iou(out["boxes"], target["boxes"]).argmax(1)
    gt = project_masks(target["masks"], out["boxes"], match, 112) >= 0.5
    assert torch.equal(gt, s["gt"])
    pred = s["phiN"] > 0
    want = (pred & gt).flatten(1).sum(1) / (pred | gt).flatten(1).sum(1).clamp_min(1)
    torch.testing.assert_close(s["iou"]["phiN"], want.float())
    for key in ("baseline", "phi0", "phiN"):
        assert ((s["iou"][key] >= 0) & (s["iou"][key] <= 1)).all()
    path = comparison_figure([s], tmp_path / "cmp.png", num_rows=2)
    assert path is not None and path.stat().st_size > 0
    assert comparison_figure([], tmp_path / "none.png") is None


def test_demo_baseline_recipe_is_the_frozen_detector() -> None:
    from levelset_rcnn.commands.demo import build_baseline_config
    from levelset_rcnn.config import load_config

    cfg = load_config("synthetic_cpu")
    base = build_baseline_config(cfg, Path("out"))
    assert base.model.arch == "mask_rcnn"
    assert base.train.init_from == str(Path("out") / "train" / "model_final.pth")
    assert base.train.freeze == ["backbone", "rpn", "box_head"]
    assert base.solver.max_iter == 300 and cfg.solver.max_iter == 1000  # cfg is not changed
    assert base.data == cfg.data and base.model.backbone == cfg.model.backbone


def test_demo_recipe_starts_the_evolution_with_large_steps(tmp_path: Path) -> None:
    """The demo's budget and its evolution start: dt = eps = 1 per step at initialisation (the
    model default, 0.05 / 0.1, learns to switch the evolution off in a short budget)."""
    import argparse

    import torch

    from levelset_rcnn.commands.demo import DEMO_ITERS, build_demo_config
    from levelset_rcnn.engine.build import build_model
    from levelset_rcnn.modeling.heads import HyperParameters

    args = argparse.Namespace(output=tmp_path, quick=False, max_iter=None, train_images=None,
                              val_images=None)
    cfg = build_demo_config(args)
    assert cfg.solver.max_iter == DEMO_ITERS and cfg.solver.steps == [round(800 * 0.45)]
    branch = build_model(cfg.model, num_classes=4).roi_heads.mask_branch
    x = torch.randn(3, 64, 14, 14)
    hp = HyperParameters.from_raw(branch.hyper_head(x), branch.num_steps)
    torch.testing.assert_close(hp.dt, torch.ones_like(hp.dt), atol=0.05, rtol=0)
    torch.testing.assert_close(hp.eps, torch.ones_like(hp.eps), atol=0.05, rtol=0)
    torch.testing.assert_close(hp.mu, torch.full_like(hp.mu, 0.2), atol=0.02, rtol=0)
