"""Training, evaluation and prediction engine: config-driven trainer (SGD, warmup, step decay,
AMP on CUDA, clipping), DDP under ``torchrun``, atomic resumable checkpoints, evaluation of
phi_0 and phi_N side by side."""

from .build import build_model, load_trained_model, model_kwargs
from .checkpoint import (
    FINAL_MODEL,
    LAST_CHECKPOINT,
    load_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .data import ResumableBatchSampler, build_datasets, build_train_loader, build_val_loader
from .inference import (
    add_phi0_masks,
    build_evaluator,
    evaluate_model,
    make_evaluator,
    predict_batch,
    tta_kwargs,
)
from .solver import build_optimizer, lr_at
from .tables import format_metrics, metrics_table
from .trainer import Trainer, TrainingDivergedError

__all__ = [
    "FINAL_MODEL", "LAST_CHECKPOINT", "ResumableBatchSampler", "Trainer",
    "TrainingDivergedError", "add_phi0_masks", "build_datasets", "build_evaluator", "build_model",
    "build_optimizer", "build_train_loader", "build_val_loader", "evaluate_model",
    "format_metrics",
    "load_checkpoint", "load_trained_model", "lr_at", "make_evaluator", "metrics_table",
    "model_kwargs",
    "model_state", "predict_batch", "rng_state", "save_checkpoint", "set_rng_state", "tta_kwargs",
]
