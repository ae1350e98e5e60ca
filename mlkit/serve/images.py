"""Decoding uploaded images safely.

An upload is untrusted: it may be no image at all, a truncated file, a format
the server does not accept, or a small file that decodes to billions of pixels
(a decompression bomb). ``decode_image`` checks each of these before the pixels
are decoded and answers with an ApiError naming the problem.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from mlkit.serve.errors import ApiError

# Signatures of image formats the server does not decode, so that they get
# their own error instead of "not an image". Only the accepted formats' decoders
# ever see the bytes.
_OTHER_FORMATS = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"\x00\x00\x01\x00": "ICO",
    b"8BPS": "PSD",
}


def _other_format(data: bytes) -> str | None:
    return next((n for sig, n in _OTHER_FORMATS.items() if data.startswith(sig)), None)


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    formats: Sequence[str],
) -> Image.Image:
    """The RGB image in ``data``, upright by its EXIF orientation.

    Raises ApiError: payload_too_large (more than ``max_bytes``),
    invalid_image (empty, not an image, truncated or corrupt),
    unsupported_image_format (an image, but not one of ``formats``),
    image_too_large (more than ``max_pixels`` pixels, checked from the header
    before anything is decoded).
    """
    if len(data) > max_bytes:
        raise ApiError(
            "payload_too_large",
            f"the image file has {len(data)} bytes; the limit is {max_bytes}",
        )
    if not data:
        raise ApiError("invalid_image", "the image file is empty")

    try:
        # PIL warns, then raises, for images above its own global bomb limit;
        # both mean "too large" here, and our own limit is checked below.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ApiError("image_too_large", f"the image is too large: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        other = _other_format(data)
        if other is not None:
            raise ApiError(
                "unsupported_image_format",
                f"the image is {other}; the server accepts {', '.join(formats)}",
            ) from None
        raise ApiError(
            "invalid_image",
            f"the file is not an image the server can read; send one of "
            f"{', '.join(formats)}",
        ) from None

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(
                "image_too_large",
                f"the image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels}",
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ApiError(
                "invalid_image",
                f"the {image.format} image cannot be decoded (truncated or "
                f"corrupt): {exc}",
            ) from None
