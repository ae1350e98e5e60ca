"""Image loading, augmentation and normalization, with PIL and torch only.

Every transform takes a ``PIL.Image`` (any mode; it is converted to RGB) and
returns a float32 tensor ``(3, size, size)`` normalized with per-channel
``mean`` and ``std`` (fractions of 255, as ``compute_normalization`` returns
them). The evaluation transform is deterministic; it is also what a server
applies. The training transform draws its randomness from torch: from the
``generator`` it is given, else from torch's global generator, which
``torch.manual_seed`` and the per-worker seeding of ``DataLoader`` control, so a
seeded run augments the same way every time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_RESAMPLE = Image.Resampling.BILINEAR


class AugmentConfig(BaseModel):
    """Random changes applied to each training image.

    ``scale`` is the range of the crop's area as a fraction of the image,
    ``ratio`` the range of its aspect ratio (width / height); the crop is then
    resized to the output size. ``hflip`` and ``vflip`` are flip probabilities
    (skin photos have no natural up or left). ``rotation`` is the largest
    angle in degrees either way; corners it uncovers are filled with the mean
    colour. ``brightness``, ``contrast`` and ``saturation`` are the largest
    relative change (0.2: factor in [0.8, 1.2]); ``hue`` is the largest shift
    as a fraction of the colour circle (at most 0.5).
    """

    model_config = ConfigDict(extra="forbid")

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = Field(default=0.5, ge=0.0, le=1.0)
    vflip: float = Field(default=0.5, ge=0.0, le=1.0)
    rotation: float = Field(default=20.0, ge=0.0, le=180.0)
    brightness: float = Field(default=0.2, ge=0.0, lt=1.0)
    contrast: float = Field(default=0.2, ge=0.0, lt=1.0)
    saturation: float = Field(default=0.2, ge=0.0, lt=1.0)
    hue: float = Field(default=0.02, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"scale must satisfy 0 < min <= max <= 1, got {self.scale}"
            )
        low, high = self.ratio
        if not 0 < low <= high:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        return self


def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB, turned upright by its EXIF orientation.

    The file is read completely and closed. Raises ``DataError`` when the file
    is missing or is not an image PIL can decode.
    """
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError("image file not found", path=path) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot decode image: {exc}", path=path) from exc


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise DataError(
            "transforms take a PIL image",
            expected="PIL.Image.Image",
            got=type(image).__name__,
        )
    return image if image.mode == "RGB" else image.convert("RGB")


def _centre_box(width: int, height: int, fraction: float) -> tuple[float, ...]:
    side = min(width, height) * fraction
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _check_stats(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(
            f"mean and std need one value per RGB channel, got {list(mean)} and "
            f"{list(std)}"
        )
    if any(not s > 0 for s in std):
        raise ConfigError(f"std values must be positive, got {list(std)}")
    return (
        torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
        torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
    )


class ImageTransform:
    """Base of the transforms: checks ``size``, ``mean``, ``std``; converts."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if size < 1:
            raise ConfigError(f"image size must be a positive number of pixels: {size}")
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._mean, self._std = _check_stats(self.mean, self.std)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """Normalized float32 ``(3, H, W)`` from an RGB image."""
        pixels = torch.from_numpy(np.array(image, dtype=np.float32))
        pixels = pixels.permute(2, 0, 1).div_(255.0)
        return (pixels - self._mean) / self._std


class EvalTransform(ImageTransform):
    """Deterministic: centre square crop, resized to ``size``.

    ``crop_fraction`` is the side of the square as a fraction of the shorter
    image side (1.0 keeps the whole shorter side).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_fraction: float = 1.0,
    ) -> None:
        super().__init__(size, mean, std)
        if not 0 < crop_fraction <= 1:
            raise ConfigError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        self.crop_fraction = crop_fraction

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = _rgb(image)
        box = _centre_box(image.width, image.height, self.crop_fraction)
        # Crop and resize in one resampling step.
        image = image.resize((self.size, self.size), _RESAMPLE, box=box)
        return self.to_tensor(image)


class TrainTransform(ImageTransform):
    """Random resized crop, rotation, flips and colour jitter, then normalize.

    Call it as ``transform(image)`` (randomness from torch's global generator)
    or ``transform(image, generator)``.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        cfg: AugmentConfig | None = None,
    ) -> None:
        super().__init__(size, mean, std)
        self.cfg = cfg or AugmentConfig()
        self._fill = tuple(round(255 * m) for m in self.mean)

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        cfg, g = self.cfg, generator
        image = _rgb(image)

        # Crop first, so that rotation and jitter work on the small image.
        box = self._crop_box(image.width, image.height, g)
        image = image.resize((self.size, self.size), _RESAMPLE, box=box)

        if cfg.rotation > 0:
            angle = _uniform(-cfg.rotation, cfg.rotation, g)
            image = image.rotate(angle, resample=_RESAMPLE, fillcolor=self._fill)
        if cfg.hflip > 0 and _uniform(0, 1, g) < cfg.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if cfg.vflip > 0 and _uniform(0, 1, g) < cfg.vflip:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)

        image = self._jitter(image, g)
        return self.to_tensor(image)

    def _crop_box(
        self, width: int, height: int, g: torch.Generator | None
    ) -> tuple[float, ...]:
        """A random box of the configured area and aspect ratio inside the image.

        Tries ten times; when no box fits (very elongated images with a
        large minimum scale), falls back to the centre square.
        """
        area = width * height
        log_low, log_high = (math.log(r) for r in self.cfg.ratio)
        for _ in range(10):
            target = area * _uniform(*self.cfg.scale, g)
            ratio = math.exp(_uniform(log_low, log_high, g))
            w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
            if w <= width and h <= height:
                left = _uniform(0, width - w, g)
                top = _uniform(0, height - h, g)
                return (left, top, left + w, top + h)
        return _centre_box(width, height, 1.0)

    def _jitter(self, image: Image.Image, g: torch.Generator | None) -> Image.Image:
        cfg = self.cfg
        for amount, enhancer in (
            (cfg.brightness, ImageEnhance.Brightness),
            (cfg.contrast, ImageEnhance.Contrast),
            (cfg.saturation, ImageEnhance.Color),
        ):
            if amount > 0:
                image = enhancer(image).enhance(_uniform(1 - amount, 1 + amount, g))
        if cfg.hue > 0:
            shift = round(_uniform(-cfg.hue, cfg.hue, g) * 256)
            if shift:
                hue, sat, val = image.convert("HSV").split()
                hue = hue.point([(i + shift) % 256 for i in range(256)])
                image = Image.merge("HSV", (hue, sat, val)).convert("RGB")
        return image


def train_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    cfg: AugmentConfig | None = None,
) -> TrainTransform:
    """The training transform (see ``TrainTransform``)."""
    return TrainTransform(size, mean, std, cfg)


def eval_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = 1.0,
) -> EvalTransform:
    """The evaluation and serving transform (see ``EvalTransform``)."""
    return EvalTransform(size, mean, std, crop_fraction)


def compute_normalization(
    images: Iterable[Image.Image], size: int = 64
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and standard deviation of ``images``, as fractions of 255.

    Each image is reduced as the evaluation transform does (centre square,
    resized to ``size``), so every image weighs the same however large it is.
    Pass training images only. Raises ``DataError`` when there are no images
    or a channel does not vary at all (normalizing would divide by zero).
    """
    if size < 1:
        raise ConfigError(f"image size must be a positive number of pixels: {size}")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for image in images:
        image = _rgb(image)
        box = _centre_box(image.width, image.height, 1.0)
        small = image.resize((size, size), _RESAMPLE, box=box)
        pixels = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += pixels.shape[0]
    if count == 0:
        raise DataError("no images to compute normalization statistics from")

    mean = total / count
    # Clipped: rounding can make the difference slightly negative.
    std = np.sqrt(np.clip(total_sq / count - np.square(mean), 0.0, None))
    flat = [name for name, s in zip("RGB", std, strict=True) if s < 1e-6]
    if flat:
        raise DataError(
            f"channel(s) {', '.join(flat)} have the same value in every pixel of "
            f"{count // (size * size)} image(s); normalization would divide by zero",
            hint="compute statistics on the real training images",
        )
    log.info(
        "normalization from %s images: mean %s, std %s",
        count // (size * size),
        np.round(mean, 4).tolist(),
        np.round(std, 4).tolist(),
    )
    return (
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )
