"""The training loop: one process or many under ``torchrun`` (PyTorch DDP).

Each iteration: learning rate from :func:`~.solver.lr_at`, the batch for this iteration from
the resumable stream (:mod:`.data`), forward under CUDA autocast when ``solver.amp``, a check
that the loss is finite on every rank (before any update, so a bad loss never reaches the
weights), backward through ``GradScaler``, optional gradient-norm clipping, SGD step.
Checkpoints every ``train.checkpoint_period`` iterations and at the end (atomically, rank 0).
``resume=True`` restores model, optimizer, scaler, iteration and every rank's RNG states, so
the continued run computes the same losses as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import comm, threads
from ..config import Config
from .build import build_model
from .checkpoint import (
    FINAL_MODEL,
    LAST_CHECKPOINT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .classes import check_same_classes, class_list
from .data import base_dataset, build_datasets, build_train_loader, build_val_loader
from .freeze import check_resume_freeze, prepare_model, set_train_mode
from .inference import build_evaluator, evaluate_model, tta_kwargs
from .run_dir import truncate_metrics
from .solver import build_optimizer, lr_at, set_lr
from .tables import metrics_table

__all__ = ["Trainer", "TrainingDivergedError"]

logger = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """A loss became NaN or Inf; the weights were not updated with it."""


class Trainer:
    """Train the model a :class:`~levelset_rcnn.config.Config` describes.

    Args:
        cfg: the recipe.
        resume: continue from ``train.output_dir/checkpoint_last.pth``.
        progress: tqdm bar (rank 0).
        tensorboard: write TensorBoard scalars under ``output_dir/tb`` (rank 0).
        model: use this model instead of building one (tests).
    """

    def __init__(self, cfg: Config, *, resume: bool = False, progress: bool = True,
                 tensorboard: bool = True, model: nn.Module | None = None) -> None:
        self.cfg = cfg
        self.device = comm.resolve_device(cfg.train.device)
        self.distributed = comm.init_distributed(self.device)
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.output_dir = Path(cfg.train.output_dir)
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self.eval_time = 0.0

        _seed_all(cfg.train.seed)  # identical initial weights on every rank
        # Rank 0 makes any synthetic data first; the others then read it.
        if self.rank == 0:
            self.datasets = build_datasets(cfg, splits=self._splits())
        comm.barrier()
        if self.rank != 0:
            self.datasets = build_datasets(cfg, splits=self._splits())
        base = base_dataset(self.datasets["train"])
        num_classes = base.num_classes
        self.meta = {"class_names": list(base.class_names),
                     "label_to_cat_id": dict(base.label_to_cat_id)}
        if "val" in self.datasets:  # one model, one set of classes (engine/classes.py)
            check_same_classes(class_list(self.meta), class_list(base_dataset(
                self.datasets["val"])), a_name=f"the training set {base.ann_file}",
                b_name=f"the validation set {base_dataset(self.datasets['val']).ann_file}")
        if model is None:
            model = build_model(cfg.model, num_classes=num_classes)
        self.model = model.to(self.device)
        # train.init_from / train.freeze (engine/freeze.py), before the optimizer sees params.
        self.freeze = prepare_model(self.model, cfg.train, resume=resume, meta=self.meta)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.amp = bool(cfg.solver.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_iter = 0
        if cfg.solver.ims_per_batch % self.world_size:
            raise ValueError(f"solver.ims_per_batch={cfg.solver.ims_per_batch} is not divisible "
                             f"by the {self.world_size} processes")
        self.batch_size = cfg.solver.ims_per_batch // self.world_size
        _seed_all(cfg.train.seed + 1000 * self.rank + 1)  # per-rank sampling randomness
        if resume:
            self._resume()
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.writer = None
        if tensorboard and comm.is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.output_dir / "tb"),
                                        purge_step=self.start_iter or None)

    def _splits(self) -> tuple[str, ...]:
        c = self.cfg
        wants_val = c.train.eval_period > 0 or c.train.eval_at_end
        has_val = c.data.synthetic or bool(c.data.val_ann)
        return ("train", "val") if wants_val and has_val else ("train",)

    # ----------------------------------------------------------------------------------------
    def _resume(self) -> None:
        path = self.output_dir / LAST_CHECKPOINT
        ckpt = load_checkpoint(path, map_location="cpu")
        check_same_classes(class_list(ckpt.get("meta") or {}), class_list(self.meta),
                           a_name=f"{path}", b_name="the training set given now")
        check_resume_freeze(ckpt, self.cfg.train, path)
        comm.unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_iter = int(ckpt["iteration"])
        states = ckpt.get("rng", [])
        if len(states) == self.world_size:
            set_rng_state(states[self.rank])
        elif states:
            logger.warning("checkpoint was written by %d processes, now %d: random streams "
                           "restart from rank 0's state", len(states), self.world_size)
            set_rng_state(states[0])
        self.last_checkpoint = path
        if comm.is_main_process():
            print(f"resumed from {path} at iteration {self.start_iter}")

    def _sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP broadcasts them at the start of each forward, so this is what the next iteration
        would see anyway; doing it before a checkpoint or at the end leaves one state on all
        ranks. (Trainable BatchNorm only occurs without pretrained weights; with them the
        backbone uses frozen statistics.)
        """
        if self.distributed:
            for buf in comm.unwrap(self.model).buffers():
                dist.broadcast(buf, src=0)

    def save(self, iteration: int) -> Path | None:
        """Write ``checkpoint_last.pth`` (all ranks join to gather their RNG states)."""
        self._sync_buffers()
        states = comm.all_gather(rng_state())
        path = self.output_dir / LAST_CHECKPOINT
        if comm.is_main_process():
            payload = {
                "model": comm.unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.amp else {},
                "iteration": iteration,
                "rng": states,
                "config": self.cfg.to_dict(),
                "meta": self.meta,
            }
            save_checkpoint(path, payload)
        comm.barrier()
        self.last_checkpoint = path
        return path

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``solver.max_iter``; returns ``{"history", "metrics"}``.

        Raises:
            TrainingDivergedError: a NaN / Inf loss (the last checkpoint is left as it was).
        """
        cfg = self.cfg
        max_iter = cfg.solver.max_iter
        main = comm.is_main_process()
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.dump(self.output_dir / "config.yaml")
            print(threads.log_line())  # e.g. "threads: 2 (affinity 2, cgroup quota none, ...)"
        loader = build_train_loader(
            self.datasets["train"], batch_size=self.batch_size, seed=cfg.train.seed,
            rank=self.rank, world_size=self.world_size, start_iter=self.start_iter,
            num_workers=cfg.data.num_workers,
            aspect_ratio_grouping=cfg.data.aspect_ratio_grouping)
        stream = iter(loader)
        set_train_mode(self.model, cfg.train.freeze)  # frozen parts stay in eval mode
        bar = tqdm(total=max_iter, initial=self.start_iter, desc="train", unit="it",
                   disable=not (self.progress and main), dynamic_ncols=True)
        if main:  # records after the resumed iteration are about to be written again
            truncate_metrics(self.output_dir / "metrics.jsonl", self.start_iter)
        log_file = (self.output_dir / "metrics.jsonl").open("a") if main else None
        metrics: dict[str, Any] = {}
        t_log, it_log = time.perf_counter(), self.start_iter
        try:
            for iteration in range(self.start_iter, max_iter):
                losses = self.step(iteration, next(stream))
                self.history.append({"iteration": iteration, **losses})
                done = iteration + 1
                if main:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['loss']:.3f}",
                                    lr=f"{losses['lr']:.2g}", refresh=False)
                if done % cfg.train.log_period == 0 or done == max_iter:
                    now = time.perf_counter()
                    self._log(done, losses, (now - t_log) / max(1, done - it_log), log_file)
                    t_log, it_log = now, done
                if done % cfg.train.checkpoint_period == 0 or done == max_iter:
                    self.save(done)
                if (cfg.train.eval_period and done % cfg.train.eval_period == 0
                        and done != max_iter):
                    self._evaluate(done, log_file)
            self._sync_buffers()
            if main:
                bar.close()
                save_checkpoint(self.output_dir / FINAL_MODEL, {
                    "model": comm.unwrap(self.model).state_dict(), "config": cfg.to_dict(),
                    "meta": self.meta, "iteration": max_iter})
            if cfg.train.eval_at_end and "val" in self.datasets:
                t_eval = time.perf_counter()
                metrics = self._evaluate(max_iter, log_file)
                self.eval_time = time.perf_counter() - t_eval
        finally:
            bar.close()
            if log_file:
                log_file.close()
            if self.writer:
                self.writer.flush()
        return {"history": self.history, "metrics": metrics}

    def step(self, iteration: int, batch: tuple[Any, Any]) -> dict[str, float]:
        """One SGD iteration; returns the (this rank's) loss values and the learning rate."""
        lr = lr_at(self.cfg.solver, iteration)
        set_lr(self.optimizer, lr)
        images, targets = batch
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            loss_dict = self.model(images, targets)
        total = sum(loss_dict.values())
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        values["loss"] = float(total.detach())
        bad = 0.0 if math.isfinite(values["loss"]) else 1.0
        if comm.all_reduce_max(bad, self.device) > 0:
            where = f" (rank {self.rank})" if self.distributed else ""
            last = (f"the last good checkpoint is {self.last_checkpoint}"
                    if self.last_checkpoint else "no checkpoint was written yet")
            raise TrainingDivergedError(
                f"loss is not finite at iteration {iteration}{where}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                + f". Training stopped before updating the weights; {last}. Try a lower "
                "solver.base_lr, a longer solver.warmup_iters or solver.clip_grad_norm.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.solver.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad],
                self.cfg.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values["lr"] = lr
        return values

    # ----------------------------------------------------------------------------------------
    def _log(self, done: int, losses: dict[str, float], step_time: float, log_file: Any
             ) -> None:
        avg = dict(losses)
        if self.distributed:  # mean over ranks for the record
            keys = sorted(k for k in losses if k != "lr")
            t = torch.tensor([losses[k] for k in keys], dtype=torch.float64,
                             device=self.device)
            dist.all_reduce(t)
            avg.update({k: float(v) / self.world_size for k, v in zip(keys, t, strict=True)})
        if not comm.is_main_process():
            return
        record = {"iteration": done, "time_per_iter": step_time, **avg}
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if self.writer:
            for k, v in avg.items():
                self.writer.add_scalar(f"train/{k}", v, done)

    def _evaluate(self, done: int, log_file: Any) -> dict[str, Any]:
        cfg = self.cfg
        ds = self.datasets["val"]
        loader = build_val_loader(ds, rank=self.rank, world_size=self.world_size,
                                  max_images=cfg.eval.max_images)
        evaluator = build_evaluator(ds, self.model, cfg.eval, output_dir=self.output_dir)
        results = evaluate_model(self.model, loader, evaluator, self.device,
                                 progress=self.progress, **tta_kwargs(cfg.eval))
        set_train_mode(self.model, cfg.train.freeze)
        if not comm.is_main_process():
            return {}
        table = metrics_table(results)
        log_file.write(json.dumps({"iteration": done, "eval": results}) + "\n")
        log_file.flush()
        (self.output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
        if self.writer:
            for name, row in table.items():
                for k, v in row.items():
                    if math.isfinite(v):
                        self.writer.add_scalar(f"eval/{name}/{k}", v, done)
            if "bbox" in results:
                self.writer.add_scalar("eval/bbox/AP", results["bbox"]["AP"], done)
        return results


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global state other code uses)
    torch.manual_seed(seed)
