"""The recipe's eval section reaches the evaluator (boundary definition, Boundary AP)."""

from __future__ import annotations

import pytest

from levelset_rcnn.config import ConfigError, load_config
from levelset_rcnn.data import CocoInstanceDataset, make_synthetic_coco, synthetic_image_dir
from levelset_rcnn.engine.inference import build_evaluator


class _LevelSetLike:
    refines_initial_tsdf = True


@pytest.mark.parametrize("overrides, mode, bap", [
    ([], "davis", True),
    (["eval.boundary_mode=inner", "eval.boundary_ap=false"], "inner", False),
])
def test_eval_fields_reach_the_coco_evaluator(tmp_path, overrides, mode, bap):
    ann = make_synthetic_coco(tmp_path / "synth", num_images=2, seed=0, image_size=64)
    ds = CocoInstanceDataset(synthetic_image_dir(ann), ann)
    ev = build_evaluator(ds, _LevelSetLike(), load_config(None, overrides).eval)
    assert ev.boundary_mode == mode and ev.boundary_ap is bap
    assert tuple(ev.mask_keys) == ("masks", "masks_phi0")


def test_unknown_boundary_mode_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"eval\.boundary_mode"):
        load_config(None, ["eval.boundary_mode=thin"])
