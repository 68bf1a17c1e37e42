"""Frozen-detector training (train.init_from + train.freeze): level-set masks on a trained
Mask R-CNN. Frozen parts stay bit-identical (parameters and BatchNorm buffers), the mask part
trains, resume keeps the run frozen, and bad sources are ConfigErrors naming the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from levelset_rcnn.config import FREEZABLE_PARTS, ConfigError, load_config
from levelset_rcnn.engine import FINAL_MODEL, LAST_CHECKPOINT, Trainer, build_model
from levelset_rcnn.engine.checkpoint import load_checkpoint, save_checkpoint
from levelset_rcnn.engine.freeze import PARTS, prepare_model

from .conftest import TINY_OVERRIDES, tiny_config

pytestmark = pytest.mark.timeout(300)

DETECTOR = ("backbone", "rpn", "box_head")
_CLS = "roi_heads.box_predictor.cls_score."
FREEZE = "train.freeze=[backbone,rpn,box_head]"


class Killed(Exception):
    """Stands in for a kill signal in the middle of an iteration."""


@pytest.fixture(scope="module")
def maskrcnn_final(tiny_data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Mask R-CNN of ours after two iterations: model_final.pth as train writes it."""
    out = tmp_path_factory.mktemp("maskrcnn")
    cfg = tiny_config(tiny_data_root, out, "model.arch=mask_rcnn", "solver.max_iter=2",
                      "train.seed=7")
    Trainer(cfg, progress=False, tensorboard=False).train()
    return out / FINAL_MODEL


def _prefixes(names) -> tuple[str, ...]:
    return tuple(f"{path}." for n in names for path in PARTS[n])


def _part_state(model: nn.Module, names) -> dict[str, torch.Tensor]:
    pre = _prefixes(names)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(pre)}


def _frozen_modules(model: nn.Module, names) -> list[nn.Module]:
    return [m for n in names for path in PARTS[n]
            for m in model.get_submodule(path).modules()]


def _tiny_model(num_classes: int = 5) -> nn.Module:
    """The tiny recipe's LevelSet R-CNN (5 classes: the synthetic data's 4 and background)."""
    cfg = load_config(None, TINY_OVERRIDES)
    return build_model(cfg.model, num_classes=num_classes)


def test_part_names_match_the_recipe_field() -> None:
    assert tuple(PARTS) == FREEZABLE_PARTS
    model = _tiny_model()
    for name in PARTS:  # every part is a module of the model and holds weights
        assert sum(p.numel() for p in model.get_submodule(PARTS[name][0]).parameters())


def test_frozen_detector_trains_only_the_mask_part(tiny_data_root: Path, tmp_path: Path,
                                                   maskrcnn_final: Path, capsys) -> None:
    source = load_checkpoint(maskrcnn_final)["model"]
    # eval_period=2: the evaluation in the middle puts the model back into training mode.
    cfg = tiny_config(tiny_data_root, tmp_path / "out", f"train.init_from={maskrcnn_final}",
                      FREEZE, "train.eval_period=2")
    trainer = Trainer(cfg, progress=False, tensorboard=False)
    model = trainer.model
    printed = capsys.readouterr().out
    assert f"train.init_from: weights from {maskrcnn_final}: loaded" in printed
    assert "unexpected (ignored)" in printed  # the binary mask predictor
    assert re.search(r"train\.freeze: backbone \([\d,]+ parameters\), rpn \([\d,]+ "
                     r"parameters\), box_head \([\d,]+ parameters\): no gradients", printed)
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert re.search(rf"training {sum(p.numel() for p in model.parameters() if p.requires_grad):,}"
                     r" of [\d,]+ parameters: roi_heads.mask_branch, roi_heads.mask_head",
                     printed)
    assert all(k.startswith(("roi_heads.mask_head.", "roi_heads.mask_branch.")) for k in trainable)
    assert any(k.startswith("roi_heads.mask_branch.") for k in trainable)

    frozen = _part_state(model, DETECTOR)
    # The detector came from the file: backbone, RPN and box head (the box predictor too).
    for k, v in frozen.items():
        assert torch.equal(v, source[k]), k
    assert torch.equal(model.roi_heads.mask_head.state_dict()["0.0.weight"],
                       source["roi_heads.mask_head.0.0.weight"])  # the trunk loads too
    # No BatchNorm2d would make the buffer check trivial: the tiny recipe has trainable ones.
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.parameters() if p.requires_grad}
    mask_before = {k: v.detach().clone() for k, v in model.named_parameters() if k in trainable}

    step = trainer.step
    modes: list[tuple[bool, bool, bool]] = []

    def watched_step(iteration, batch):
        modes.append((any(m.training for m in _frozen_modules(model, DETECTOR)),
                      model.rpn.training and model.roi_heads.training,
                      model.roi_heads.mask_branch.training))
        return step(iteration, batch)

    trainer.step = watched_step  # type: ignore[method-assign]
    history = trainer.train()["history"]
    assert len(history) == 4 and "loss_objectness" in history[0]  # detector losses logged
    assert modes == [(False, True, True)] * 4  # also after the evaluation at iteration 2

    after = _part_state(model, DETECTOR)
    assert after.keys() == frozen.keys()
    for k, v in frozen.items():  # parameters and buffers (BatchNorm statistics)
        assert torch.equal(after[k], v), k
    changed = [k for k, p in model.named_parameters() if k in trainable
               and not torch.equal(p.detach(), mask_before[k])]
    assert any(k.startswith("roi_heads.mask_branch.") for k in changed)
    assert any(k.startswith("roi_heads.mask_head.") for k in changed)
    assert len(changed) >= 0.9 * len(trainable)
    final = load_checkpoint(tmp_path / "out" / FINAL_MODEL)
    assert final["config"]["train"]["freeze"] == list(DETECTOR)
    for k, v in frozen.items():
        assert torch.equal(final["model"][k], v), k


def test_resume_stays_frozen_without_init_from(tiny_data_root: Path, tmp_path: Path,
                                               maskrcnn_final: Path) -> None:
    init = tmp_path / "detector.pth"
    init.write_bytes(maskrcnn_final.read_bytes())
    source = load_checkpoint(init)["model"]
    cfg = tiny_config(tiny_data_root, tmp_path / "out", f"train.init_from={init}", FREEZE)
    first = Trainer(cfg, progress=False, tensorboard=False)
    step = first.step

    def dying_step(iteration, batch):
        if iteration == 3:
            raise Killed
        return step(iteration, batch)

    first.step = dying_step  # type: ignore[method-assign]
    with pytest.raises(Killed):
        first.train()
    ckpt = load_checkpoint(tmp_path / "out" / LAST_CHECKPOINT)
    assert ckpt["iteration"] == 2
    n_trainable = sum(1 for p in first.model.parameters() if p.requires_grad)
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == n_trainable

    init.unlink()  # resuming needs the checkpoint only: init_from is not applied again
    second = Trainer(cfg, resume=True, progress=False, tensorboard=False)
    assert second.start_iter == 2
    model = second.model
    assert {k for k, p in model.named_parameters() if not p.requires_grad} >= {
        k for k in dict(model.named_parameters()) if k.startswith(_prefixes(DETECTOR))}
    assert not any(m.training for m in _frozen_modules(model, DETECTOR))
    # The optimizer (momentum of the trainable parameters only) came back from the file.
    state = second.optimizer.state_dict()
    assert len(state["param_groups"][0]["params"]) == n_trainable
    for i, s in ckpt["optimizer"]["state"].items():
        assert torch.equal(state["state"][i]["momentum_buffer"], s["momentum_buffer"])
    trained_mask = {k: v for k, v in ckpt["model"].items() if "mask_" in k}
    for k, v in trained_mask.items():  # the checkpoint's trained mask part, not the file's
        assert torch.equal(model.state_dict()[k], v), k
    second.train()
    for k, v in _part_state(model, DETECTOR).items():
        assert torch.equal(v, source[k]), k

    other = tiny_config(tiny_data_root, tmp_path / "out", "train.freeze=[backbone]")
    with pytest.raises(ConfigError, match=r"train\.freeze=\['backbone', 'rpn', 'box_head'\]"
                                          r".*now says train\.freeze=\['backbone'\]"):
        Trainer(other, resume=True, progress=False, tensorboard=False)


def _torchvision_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our Mask R-CNN state dict under the key names of torchvision's released COCO file
    (maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth): MaskRCNNHeads v1 (mask_fcn1..), RPNHead v1
    (rpn.head.conv), roi_heads.mask_predictor, no BatchNorm counters."""
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        k = re.sub(r"mask_head\.(\d+)\.0\.", lambda m: f"mask_head.mask_fcn{int(m[1]) + 1}.", k)
        k = k.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        k = k.replace("roi_heads.mask_branch.mask_predictor.", "roi_heads.mask_predictor.")
        out[k] = v
    return out


def test_init_from_torchvision_state_dict_file(tmp_path: Path, maskrcnn_final: Path,
                                               capsys) -> None:
    state = load_checkpoint(maskrcnn_final)["model"]
    tv = _torchvision_layout(state)
    assert "rpn.head.conv.weight" in tv and "roi_heads.mask_head.mask_fcn1.weight" in tv
    path = tmp_path / "maskrcnn_tiny_coco_layout.pth"
    torch.save(tv, path)
    cfg = load_config(None, TINY_OVERRIDES + [f"train.init_from={path}",
                                              "train.freeze=[backbone,rpn,box_head,mask_trunk]"])
    model = _tiny_model()
    summary = prepare_model(model, cfg.train, resume=False)
    assert summary is not None and set(summary.parts) == set(PARTS)
    own = model.state_dict()
    for k in ("rpn.head.conv.0.0.weight", "roi_heads.mask_head.0.0.weight",
              "roi_heads.box_predictor.cls_score.weight", "backbone.fpn.layer_blocks.0.0.weight"):
        assert torch.equal(own[k], state[k]), k
    assert summary.trainable_groups == ["roi_heads.mask_branch"]
    assert "unexpected (ignored) 4 (roi_heads.mask_predictor)" in capsys.readouterr().out


def test_coco_file_rows_follow_the_dataset_classes(tmp_path: Path, capsys) -> None:
    """torchvision's COCO predictor has 91 rows (row = COCO category id); a COCO-class dataset
    has contiguous labels. Its rows are picked by category id and name; a dataset of other
    classes gets no box predictor from the file (so box_head cannot be frozen)."""
    cfg = load_config(None, TINY_OVERRIDES + ["model.arch=mask_rcnn"])
    coco = _torchvision_layout(build_model(cfg.model, num_classes=91).state_dict())
    path = tmp_path / "coco_layout.pth"
    torch.save(coco, path)
    meta = {"class_names": ["__background__", "person", "car", "stop sign"],
            "label_to_cat_id": {1: 1, 2: 3, 3: 13}}
    for arch in ("levelset_rcnn", "mask_rcnn"):
        cfg = load_config(None, TINY_OVERRIDES + [f"model.arch={arch}",
                                                  f"train.init_from={path}", FREEZE])
        model = build_model(cfg.model, num_classes=4)
        prepare_model(model, cfg.train, resume=False, meta=meta)
        assert "classes picked from the file's 90 rows" in capsys.readouterr().out
        rows = torch.tensor([0, 1, 3, 13])
        pred = model.roi_heads.box_predictor
        assert torch.equal(pred.cls_score.weight, coco[f"{_CLS}weight"][rows])
        assert torch.equal(pred.cls_score.bias, coco[f"{_CLS}bias"][rows])
        box_rows = (4 * rows[:, None] + torch.arange(4)).flatten()
        assert torch.equal(pred.bbox_pred.weight, coco["roi_heads.box_predictor.bbox_pred.weight"]
                           [box_rows])
        if arch == "mask_rcnn":  # the binary branch's class-specific logits too
            logits = model.roi_heads.mask_branch.mask_predictor.mask_fcn_logits
            assert torch.equal(logits.weight,
                               coco["roi_heads.mask_predictor.mask_fcn_logits.weight"][rows])

    shapes = {"class_names": ["__background__", "circle", "square", "triangle", "star"],
              "label_to_cat_id": {1: 1, 2: 2, 3: 3, 4: 4}}
    cfg = load_config(None, TINY_OVERRIDES + [f"train.init_from={path}"])
    model = build_model(cfg.model, num_classes=5)
    prepare_model(model, cfg.train, resume=False, meta=shapes)  # box predictor starts fresh
    assert "box predictor not loaded: the file's classes lack 4 of the dataset's 4 (e.g. " \
        "'circle'" in capsys.readouterr().out
    cfg = load_config(None, TINY_OVERRIDES + [f"train.init_from={path}", FREEZE])
    with pytest.raises(ConfigError, match=r"'box_head' would keep 4 initial.*box predictor not "
                                          r"loaded"):
        prepare_model(build_model(cfg.model, num_classes=5), cfg.train, resume=False,
                      meta=shapes)


def test_bad_sources_are_config_errors(tmp_path: Path, maskrcnn_final: Path) -> None:
    def prepare(*overrides: str) -> None:
        cfg = load_config(None, TINY_OVERRIDES + list(overrides))
        prepare_model(build_model(cfg.model, num_classes=5), cfg.train, resume=False)

    missing = tmp_path / "nope.pth"
    with pytest.raises(ConfigError, match=rf"train\.init_from: {re.escape(str(missing))} "
                                          "does not exist"):
        prepare(f"train.init_from={missing}", FREEZE)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(text))} is not a checkpoint"):
        prepare(f"train.init_from={text}")
    other = tmp_path / "other.pth"
    save_checkpoint(other, {"model": {"encoder.weight": torch.zeros(3, 3)}, "iteration": 1})
    with pytest.raises(ConfigError, match=rf"no tensor of {re.escape(str(other))} matches.*"
                                          r"loaded 0 tensors.*unexpected \(ignored\) 1 "
                                          r"\(encoder.weight\)"):
        prepare(f"train.init_from={other}")
    with pytest.raises(ConfigError, match="needs trained weights to freeze: set "
                                          "train.init_from"):
        prepare(FREEZE)

    # A file without the RPN: freezing it would keep a random RPN.
    state = load_checkpoint(maskrcnn_final)["model"]
    partial = tmp_path / "backbone_only.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("backbone.")}, partial)
    prepare(f"train.init_from={partial}", "train.freeze=[backbone]")  # fine
    with pytest.raises(ConfigError, match=r"'rpn' would keep 6 initial \(untrained\) tensors, "
                                          r"e\.g\. rpn\.head\.conv\.0\.0\.weight"):
        prepare(f"train.init_from={partial}", "train.freeze=[backbone,rpn]")
    # Another number of classes: the box predictor is skipped, so box_head cannot be frozen.
    with pytest.raises(ConfigError, match=r"'box_head'.*shape mismatch for "
                                          r"roi_heads\.box_predictor.*other classes"):
        prepare(f"train.init_from={maskrcnn_final}", FREEZE, "model.num_classes=6")


def test_unknown_part_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"train\.freeze: unknown part\(s\) 'heads' \(valid: "
                                          r"backbone, rpn, box_head, mask_trunk\)"):
        load_config(None, ["train.freeze=[backbone,heads]"])
    with pytest.raises(ConfigError, match="leaves no parameter to train"):
        from levelset_rcnn.engine.freeze import apply_freeze

        model = _tiny_model()
        model.roi_heads.mask_branch.requires_grad_(False)
        apply_freeze(model, list(PARTS))


@pytest.mark.slow
def test_two_process_gloo_ddp_frozen(tiny_data_root: Path, tmp_path: Path,
                                     maskrcnn_final: Path) -> None:
    """Under DDP (find_unused_parameters off) the frozen parameters are no trouble: they have
    no gradients, DDP never sees them, and both ranks end equal with the detector unchanged."""
    out = tmp_path / "train"
    worker = Path(__file__).with_name("_ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(tmp_path), *TINY_OVERRIDES, f"data.root={tiny_data_root}",
           f"train.output_dir={out}", "solver.max_iter=3", "train.checkpoint_period=3",
           f"train.init_from={maskrcnn_final}", FREEZE]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("train.freeze: backbone") == 1  # rank 0 prints
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    source = load_checkpoint(maskrcnn_final)["model"]
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
        if k.startswith(_prefixes(DETECTOR)) and not k.endswith("num_batches_tracked"):
            assert torch.equal(v, source[k]), k
    trunk = "roi_heads.mask_head.0.0.weight"  # loaded from the file, then trained
    assert not torch.equal(r0["params"][trunk], source[trunk])
    assert r0["losses"] != r1["losses"]
