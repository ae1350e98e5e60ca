"""Training: the Trainer loop, checkpoints and data loaders.

Public names are re-exported here; importing this package does no work.
"""

from mlkit.train.checkpoint import load_checkpoint, save_checkpoint
from mlkit.train.sampling import build_loader, class_balanced_sampler
from mlkit.train.trainer import (
    History,
    TrainConfig,
    Trainer,
    parse_train_config,
    seed_everything,
    warmup_cosine,
)

__all__ = [
    "History",
    "TrainConfig",
    "Trainer",
    "build_loader",
    "class_balanced_sampler",
    "load_checkpoint",
    "parse_train_config",
    "save_checkpoint",
    "seed_everything",
    "warmup_cosine",
]
