"""Manifest rows as training batches: image tensor, text embedding, target.

Images are decoded once (in threads) and kept in memory when ``preload`` is
set, which suits the demo data and small real subsets; otherwise each item is
read from disk when it is needed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mlkit.models.transforms import load_image

log = logging.getLogger(__name__)


def load_images(
    data_root: str | Path, paths: Sequence[str], *, workers: int | None = None
) -> list[Image.Image]:
    """Decode the images at ``paths`` (relative to ``data_root``), in order."""
    root = Path(data_root)

    def decode(path: str) -> Image.Image:
        image = load_image(root / path)
        image.load()
        return image

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        images = list(pool.map(decode, paths))
    log.info("decoded %s images from %s", len(images), root)
    return images


class ManifestDataset(Dataset):
    """Batch dicts for rows of a manifest, following the trainer's contract.

    ``text`` and ``has_text`` are the rows' precomputed embeddings; ``targets``
    are class indices. ``images`` may pass already decoded images; otherwise
    they are decoded now (``preload``) or on each access. ``transform`` turns a
    PIL image into a normalized tensor; a training transform draws its
    randomness from torch's generator, which the data loader seeds.
    """

    def __init__(
        self,
        data_root: str | Path,
        image_paths: Sequence[str],
        text: np.ndarray,
        has_text: np.ndarray,
        targets: np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        images: Sequence[Image.Image] | None = None,
        preload: bool = True,
    ) -> None:
        n = len(image_paths)
        if not (len(text) == len(has_text) == len(targets) == n):
            raise ValueError(
                f"lengths differ: {n} images, {len(text)} embeddings, "
                f"{len(has_text)} text flags, {len(targets)} targets"
            )
        self.data_root = Path(data_root)
        self.image_paths = list(image_paths)
        # Copies: the inputs may be read-only views (e.g. of Arrow buffers).
        self.text = torch.tensor(np.asarray(text, dtype=np.float32))
        self.has_text = torch.tensor(np.asarray(has_text, dtype=bool))
        self.targets = torch.tensor(np.asarray(targets, dtype=np.int64))
        self.transform = transform
        if images is not None and len(images) != n:
            raise ValueError(f"{len(images)} decoded images for {n} rows")
        if images is None and preload:
            images = load_images(data_root, self.image_paths)
        self.images = list(images) if images is not None else None

    def __len__(self) -> int:
        return len(self.image_paths)

    def image(self, index: int) -> Image.Image:
        if self.images is not None:
            return self.images[index]
        return load_image(self.data_root / self.image_paths[index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.transform(self.image(index)),
            "text": self.text[index],
            "has_text": self.has_text[index],
            "target": self.targets[index],
        }
