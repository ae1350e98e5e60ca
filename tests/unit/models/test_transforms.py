from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlkit.errors import ConfigError, DataError
from mlkit.models.transforms import (
    AugmentConfig,
    compute_normalization,
    eval_transform,
    load_image,
    train_transform,
)

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.15)
NO_AUGMENT = AugmentConfig(
    scale=(1.0, 1.0),
    ratio=(1.0, 1.0),
    hflip=0.0,
    vflip=0.0,
    rotation=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
)


def noise(width: int = 40, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8))


def solid(colour: tuple[int, int, int], size: int = 20) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def test_eval_transform_shape_dtype_and_normalization():
    out = eval_transform(16, MEAN, STD)(solid((255, 102, 0)))

    assert out.shape == (3, 16, 16)
    assert out.dtype == torch.float32
    expected = [(1.0 - 0.5) / 0.25, (0.4 - 0.4) / 0.2, (0.0 - 0.3) / 0.15]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(out[channel], torch.full((16, 16), value))


def test_eval_transform_is_identical_every_call():
    transform = eval_transform(16, MEAN, STD)
    image = noise(60, 40)
    first = transform(image)
    torch.manual_seed(123)
    assert torch.equal(transform(image), first)
    assert torch.equal(transform(image), first)


def test_eval_transform_takes_the_centre_square():
    # Red left, green middle, blue right: the centre square of a 5:1 image
    # (x from 20 to 30) is green, with a margin for the resampling filter.
    pixels = np.zeros((10, 50, 3), np.uint8)
    pixels[:, :15, 0] = 255
    pixels[:, 15:35, 1] = 255
    pixels[:, 35:, 2] = 255
    out = eval_transform(8, (0, 0, 0), (1, 1, 1))(Image.fromarray(pixels))

    torch.testing.assert_close(out[1], torch.ones(8, 8))
    assert out[0].abs().max() < 0.01
    assert out[2].abs().max() < 0.01


def test_eval_crop_fraction_zooms_in():
    pixels = np.zeros((20, 20, 3), np.uint8)
    pixels[5:15, 5:15] = 255
    image = Image.fromarray(pixels)
    whole = eval_transform(10, (0, 0, 0), (1, 1, 1))(image)
    centre = eval_transform(10, (0, 0, 0), (1, 1, 1), crop_fraction=0.5)(image)
    assert whole.mean() < 0.5
    torch.testing.assert_close(centre, torch.ones(3, 10, 10))


def test_any_image_mode_becomes_rgb():
    grey = Image.new("L", (12, 12), 128)
    rgba = Image.new("RGBA", (12, 12), (10, 20, 30, 0))
    assert eval_transform(8, MEAN, STD)(grey).shape == (3, 8, 8)
    assert train_transform(8, MEAN, STD)(rgba).shape == (3, 8, 8)


def test_train_transform_is_deterministic_for_a_seed():
    transform = train_transform(16, MEAN, STD)
    image = noise(50, 30)

    a = transform(image, torch.Generator().manual_seed(7))
    b = transform(image, torch.Generator().manual_seed(7))
    c = transform(image, torch.Generator().manual_seed(8))

    assert a.shape == (3, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_transform_follows_the_global_seed():
    transform = train_transform(16, MEAN, STD)
    image = noise(50, 30)
    torch.manual_seed(3)
    a = [transform(image) for _ in range(3)]
    torch.manual_seed(3)
    b = [transform(image) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])


def test_train_without_augmentation_equals_eval():
    image = noise(32, 32)
    train = train_transform(16, MEAN, STD, NO_AUGMENT)
    expected = eval_transform(16, MEAN, STD)(image)
    torch.testing.assert_close(train(image, torch.Generator().manual_seed(0)), expected)


def test_crop_that_cannot_fit_falls_back_to_the_centre_square():
    # A full-area square crop cannot fit in a 2:1 image.
    image = noise(40, 20)
    train = train_transform(8, MEAN, STD, NO_AUGMENT)
    expected = eval_transform(8, MEAN, STD)(image)
    torch.testing.assert_close(train(image, torch.Generator().manual_seed(0)), expected)


@pytest.mark.parametrize(("flip", "dim"), [("hflip", 2), ("vflip", 1)])
def test_flips(flip, dim):
    image = noise(16, 16)
    cfg = NO_AUGMENT.model_copy(update={flip: 1.0})
    flipped = train_transform(16, MEAN, STD, cfg)(image, torch.Generator())
    plain = eval_transform(16, MEAN, STD)(image)
    torch.testing.assert_close(flipped, plain.flip(dim))


def test_colour_jitter_and_rotation_change_pixels():
    image = noise(16, 16)
    plain = eval_transform(16, MEAN, STD)(image)
    for update in (
        {"brightness": 0.5},
        {"contrast": 0.5},
        {"saturation": 0.5},
        {"hue": 0.2},
        {"rotation": 45.0},
    ):
        cfg = NO_AUGMENT.model_copy(update=update)
        out = train_transform(16, MEAN, STD, cfg)(
            image, torch.Generator().manual_seed(1)
        )
        assert not torch.allclose(out, plain), update


def test_rotation_fills_corners_with_the_mean_colour():
    mean = (0.2, 0.6, 0.4)
    cfg = NO_AUGMENT.model_copy(update={"rotation": 180.0})
    transform = train_transform(32, mean, (1, 1, 1), cfg)
    white = torch.tensor([1 - m for m in mean])
    outs = [
        transform(solid((255, 255, 255), 32), torch.Generator().manual_seed(seed))
        for seed in range(5)
    ]
    for out in outs:
        torch.testing.assert_close(out[:, 16, 16], white, atol=0.01, rtol=0)
    # A rotation by more than a few degrees uncovers the corners; they take the
    # mean colour, which normalizes to zero.
    corners = [out[:, 0, 0] for out in outs]
    assert any(bool((c.abs() < 0.01).all()) for c in corners)


def test_bad_transform_parameters():
    with pytest.raises(ConfigError, match="one value per RGB channel"):
        eval_transform(16, (0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ConfigError, match="positive"):
        eval_transform(16, MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="image size"):
        train_transform(0, MEAN, STD)
    with pytest.raises(ConfigError, match="crop_fraction"):
        eval_transform(16, MEAN, STD, crop_fraction=1.5)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(0.8, 0.2))
    with pytest.raises(DataError, match="PIL image"):
        eval_transform(16, MEAN, STD)(np.zeros((4, 4, 3), np.uint8))


def test_normalization_of_known_colours():
    images = [solid((200, 100, 50), 30), solid((100, 50, 0), 10)]

    mean, std = compute_normalization(images, size=8)

    np.testing.assert_allclose(mean, np.array([150, 75, 25]) / 255, rtol=1e-9)
    np.testing.assert_allclose(std, np.array([50, 25, 25]) / 255, rtol=1e-9)


def test_normalization_weighs_every_image_equally_and_accepts_a_generator():
    big_black = solid((0, 0, 0), 200)
    small_white = solid((255, 255, 255), 4)
    mean, std = compute_normalization((im for im in [big_black, small_white]), 4)
    np.testing.assert_allclose(mean, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(std, [0.5, 0.5, 0.5])


def test_normalized_training_images_have_zero_mean_unit_std():
    images = [noise(24, 24, seed) for seed in range(4)]
    mean, std = compute_normalization(images, size=24)
    batch = torch.stack([eval_transform(24, mean, std)(im) for im in images])
    torch.testing.assert_close(
        batch.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        batch.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0
    )


def test_normalization_refuses_no_images_and_flat_channels():
    with pytest.raises(DataError, match="no images"):
        compute_normalization([], size=8)
    with pytest.raises(ConfigError, match="image size"):
        compute_normalization([solid((1, 2, 3))], size=0)
    with pytest.raises(DataError, match="channel"):
        compute_normalization([solid((10, 20, 30)), solid((40, 20, 60))], size=8)


def test_load_image_converts_to_rgb(tmp_path):
    Image.new("RGBA", (6, 4), (1, 2, 3, 4)).save(tmp_path / "a.png")
    Image.new("P", (5, 5), 7).save(tmp_path / "b.png")
    Image.new("L", (3, 3), 9).save(tmp_path / "c.jpg")
    for name in ("a.png", "b.png", "c.jpg"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB"
    assert load_image(tmp_path / "a.png").size == (6, 4)
    assert load_image(tmp_path / "a.png").getpixel((0, 0)) == (1, 2, 3)


def test_load_image_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (6, 4))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").size == (4, 6)


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        load_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(info.value)
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="cannot decode"):
        load_image(tmp_path / "junk.jpg")
