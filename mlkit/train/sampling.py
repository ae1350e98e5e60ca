"""Data loaders for training and evaluation, with optional class balancing."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from mlkit.errors import DataError

if TYPE_CHECKING:
    from mlkit.train.trainer import TrainConfig

log = logging.getLogger(__name__)


def class_balanced_sampler(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler that draws every class about equally often.

    Each sample is weighted by the inverse frequency of its class, and an
    epoch draws ``len(targets)`` samples with replacement, so rare classes
    repeat and common ones are subsampled. ``generator`` makes the draws
    reproducible. Raises DataError for empty or negative targets.
    """
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
    if targets.numel() == 0:
        raise DataError("cannot balance classes of an empty training set")
    if int(targets.min()) < 0:
        raise DataError(
            "class targets must be non-negative indices", got=str(int(targets.min()))
        )
    counts = torch.bincount(targets)
    weights = 1.0 / counts[targets].to(torch.double)
    log.debug("class-balanced sampler over %d samples", targets.numel())
    return WeightedRandomSampler(
        weights, num_samples=targets.numel(), replacement=True, generator=generator
    )


def build_loader(
    dataset: Dataset,
    config: TrainConfig,
    *,
    train: bool,
    targets: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> DataLoader:
    """A DataLoader for ``dataset`` set up from a training configuration.

    A training loader shuffles (or, with ``config.class_balanced``, samples
    by inverse class frequency, which needs ``targets``) with a generator
    seeded from ``config.seed``, so the order of batches is reproducible; an
    evaluation loader keeps the dataset's order. Worker processes seed
    ``random`` and ``numpy`` from their torch seed.
    """
    generator = torch.Generator().manual_seed(config.seed)
    sampler = None
    shuffle = False
    if train and config.class_balanced:
        if targets is None:
            raise DataError(
                "class_balanced is set but no targets were given to build_loader"
            )
        sampler = class_balanced_sampler(targets, generator)
    elif train:
        shuffle = True
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=config.num_workers,
        generator=generator,
        worker_init_fn=_seed_worker if config.num_workers else None,
        drop_last=False,
    )


def _seed_worker(worker_id: int) -> None:
    """Seed a worker's ``random`` and ``numpy`` from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
