"""The classic Chan-Vese showcase, on small stand-ins for scikit-image's photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from levelset_rcnn.demo import showcase


def test_showcase_writes_its_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disc = np.zeros((32, 40), np.uint8)
    yy, xx = np.mgrid[:32, :40]
    disc[(yy - 16) ** 2 + (xx - 20) ** 2 < 81] = 200
    monkeypatch.setattr(showcase, "_load_samples", lambda: {"disc": disc, "flat": disc.T})
    path = showcase.run_showcase(tmp_path / "out", num_iters=3)
    assert path == tmp_path / "out" / "chan_vese_showcase.png"
    assert path.stat().st_size > 0
