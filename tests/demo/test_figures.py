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
