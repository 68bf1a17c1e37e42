"""Training loop: exact resume after a kill, NaN guard, atomic weights_only checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from levelset_rcnn.engine import (
    LAST_CHECKPOINT,
    Trainer,
    TrainingDivergedError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

from .conftest import tiny_config

pytestmark = pytest.mark.timeout(300)


class Killed(Exception):
    """Stands in for a kill signal in the middle of an iteration."""


def _losses(history: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    return {h["iteration"]: {k: v for k, v in h.items() if k != "iteration"} for h in history}


def _assert_same_losses(got: dict[int, dict[str, float]], want: dict[int, dict[str, float]]
                        ) -> None:
    """Equal step by step: same iterations, same loss terms, values equal to 1e-6 relative
    (bit-equal in quiet runs; a different batch or random state changes them by far more)."""
    assert sorted(got) == sorted(want)
    for it in want:
        assert got[it].keys() == want[it].keys()
        for k, v in want[it].items():
            assert got[it][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (it, k)


def test_resume_equals_uninterrupted(tiny_data_root: Path, tmp_path: Path) -> None:
    full = Trainer(tiny_config(tiny_data_root, tmp_path / "full"), progress=False,
                   tensorboard=False)
    ref = _losses(full.train()["history"])
    assert sorted(ref) == [0, 1, 2, 3]

    # Same recipe, but a DataLoader worker process this time, and killed during iteration 3:
    # the checkpoint of iteration 2 survives, the work of iteration 2 is lost.
    cfg = tiny_config(tiny_data_root, tmp_path / "resumed", "data.num_workers=1")
    first = Trainer(cfg, progress=False, tensorboard=False)
    step = first.step

    def dying_step(iteration: int, batch):
        if iteration == 3:
            raise Killed
        return step(iteration, batch)

    first.step = dying_step  # type: ignore[method-assign]
    with pytest.raises(Killed):
        first.train()
    _assert_same_losses(_losses(first.history), {i: ref[i] for i in range(3)})
    assert load_checkpoint(tmp_path / "resumed" / LAST_CHECKPOINT)["iteration"] == 2

    second = Trainer(cfg, resume=True, progress=False, tensorboard=False)
    assert second.start_iter == 2
    got = _losses(second.train()["history"])
    _assert_same_losses(got, {2: ref[2], 3: ref[3]})  # step by step
    for (name, a), b in zip(full.model.state_dict().items(),
                            second.model.state_dict().values(), strict=True):
        # Bit-equal in quiet runs; a CPU kernel's thread partitioning on a busy machine can
        # move the last bits of near-zero parameters (seen: 1e-11-sized biases).
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8, msg=name)


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_data_root: Path, tmp_path: Path
                                                  ) -> None:
    cfg = tiny_config(tiny_data_root, tmp_path / "out", "solver.max_iter=6")
    trainer = Trainer(cfg, progress=False, tensorboard=False)
    forward = trainer.model.forward
    calls = {"n": 0}
    snapshot: dict[str, torch.Tensor] = {}

    def poisoned(images, targets=None):
        losses = forward(images, targets)
        calls["n"] += 1
        if calls["n"] == 4:  # iteration 3, after the checkpoint of iteration 2
            snapshot.update({k: v.clone() for k, v in trainer.model.state_dict().items()})
            losses["loss_tsdf_final"] = losses["loss_tsdf_final"] * float("nan")
        return losses

    trainer.model.forward = poisoned  # type: ignore[method-assign]
    with pytest.raises(TrainingDivergedError, match=r"iteration 3.*loss_tsdf_final=nan.*"
                                                    r"checkpoint_last\.pth"):
        trainer.train()
    # The bad loss never reached the weights.
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    ckpt = torch.load(tmp_path / "out" / LAST_CHECKPOINT, weights_only=True)
    assert ckpt["iteration"] == 2
    fresh = build_model(cfg.model, num_classes=len(ckpt["meta"]["class_names"]))
    fresh.load_state_dict(ckpt["model"])
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "ck.pth"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"iteration": 2, "bad": Unpicklable()})
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]  # no temp file left behind
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
