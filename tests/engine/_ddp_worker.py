"""Run under ``torchrun --nproc_per_node 2``: a few DDP iterations; every rank writes
``rank<r>.pt`` with its final parameters and its own losses (test only)."""

import sys
from pathlib import Path

import torch

from levelset_rcnn.comm import cleanup, get_rank
from levelset_rcnn.config import load_config
from levelset_rcnn.engine import Trainer

if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = load_config(None, sys.argv[2:])
    trainer = Trainer(cfg, progress=False, tensorboard=False)
    result = trainer.train()
    params = {k: v.detach().clone() for k, v in trainer.model.module.state_dict().items()}
    torch.save({"params": params, "losses": [h["loss"] for h in result["history"]],
                "world": torch.distributed.get_world_size()},
               out / f"rank{get_rank()}.pt")
    cleanup()
