"""Tests of upload decoding: formats, truncation, decompression bombs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mlkit.serve.config import IMAGE_FORMATS
from mlkit.serve.errors import ApiError
from mlkit.serve.images import decode_image

LIMITS = {"max_bytes": 1 << 20, "max_pixels": 1000 * 1000, "formats": IMAGE_FORMATS}


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb(fmt):
    data = encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt)
    image = decode_image(data, **LIMITS)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_grayscale_and_alpha_become_rgb():
    data = encode(Image.new("LA", (8, 8)), "PNG")
    assert decode_image(data, **LIMITS).mode == "RGB"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    data = encode(image, "JPEG", exif=exif)
    assert decode_image(data, **LIMITS).size == (20, 40)


def error_code(data: bytes, **limits) -> str:
    with pytest.raises(ApiError) as info:
        decode_image(data, **{**LIMITS, **limits})
    return info.value.code


def test_rejections_have_their_own_codes():
    jpeg = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    assert error_code(b"") == "invalid_image"
    assert error_code(b"definitely not an image") == "invalid_image"
    assert error_code(jpeg[: len(jpeg) // 2]) == "invalid_image"
    assert error_code(jpeg, max_bytes=100) == "payload_too_large"
    assert error_code(encode(Image.new("RGB", (4, 4)), "GIF")) == (
        "unsupported_image_format"
    )
    assert error_code(encode(Image.new("RGB", (4, 4)), "BMP")) == (
        "unsupported_image_format"
    )


def test_decompression_bomb_is_refused_from_the_header():
    # 20000 x 20000 pixels of one colour compress to a few hundred KB of PNG;
    # decoding it would need 1.2 GB.
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < 200_000
    assert error_code(bomb, max_pixels=10_000_000) == "image_too_large"


def test_bomb_above_pil_own_limit_is_too_large_not_a_crash():
    bomb = encode(Image.new("1", (20000, 20000)), "PNG")
    # Above PIL's own limit (about 89 M pixels x 2) it raises before ours runs.
    assert error_code(bomb, max_pixels=10**9) == "image_too_large"
