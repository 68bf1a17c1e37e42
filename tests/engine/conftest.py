"""Tiny CPU recipes and a shared tiny synthetic dataset for the engine and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from levelset_rcnn.config import Config, load_config

#: A model small enough that one training step takes a fraction of a second on a CPU.
TINY_OVERRIDES = [
    "model.backbone=resnet18", "model.fpn_channels=16", "model.box_representation_size=32",
    "model.mask_layers=[16]", "model.predictor_channels=16", "model.cv_channels=8",
    "model.cv_hidden_channels=8", "model.min_size=64", "model.max_size=64",
    "model.rpn_batch_size_per_image=32", "model.rpn_pre_nms_top_n_train=100",
    "model.rpn_post_nms_top_n_train=40", "model.rpn_pre_nms_top_n_test=50",
    "model.rpn_post_nms_top_n_test=20", "model.box_batch_size_per_image=16",
    "model.box_detections_per_img=8",
    "data.synthetic=true", "data.synthetic_train_images=6", "data.synthetic_val_images=2",
    "data.synthetic_image_size=128", "data.num_workers=0",
    "solver.ims_per_batch=2", "solver.base_lr=0.01", "solver.max_iter=4",
    "solver.warmup_iters=2", "solver.steps=[3]", "solver.amp=false",
    "train.checkpoint_period=2", "train.log_period=1", "train.eval_at_end=false",
    "train.device=cpu",
]


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated once per session; recipes pointing at it reuse it."""
    from levelset_rcnn.engine.data import dataset_paths

    root = tmp_path_factory.mktemp("tiny_synthetic")
    cfg = load_config(None, TINY_OVERRIDES + [f"data.root={root}"])
    dataset_paths(cfg, generate=True)
    return root


def tiny_config(data_root: Path, output_dir: Path, *extra: str) -> Config:
    return load_config(None, TINY_OVERRIDES + [f"data.root={data_root}",
                                               f"train.output_dir={output_dir}", *extra])
