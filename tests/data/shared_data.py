"""Where the real test data lives: ``../shared/data`` beside the repository, or
``$LEVELSET_RCNN_SHARED_DATA``."""

import os
from pathlib import Path


def shared_data_root() -> Path:
    env = os.environ.get("LEVELSET_RCNN_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
