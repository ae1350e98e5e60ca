"""The errors the service answers with: a status, a stable code, a sentence.

Clients branch on ``error`` (the code), people read ``detail``. The codes are
part of the API: change their meaning only with a new API version.
"""

from __future__ import annotations

from typing import Any

from mlkit.errors import MlkitError

# code -> (HTTP status, what it means); the table the API documentation shows.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (
        422,
        "a field is missing, unknown, of the wrong type or out of bounds",
    ),
    "malformed_body": (
        400,
        "the body is empty, not valid JSON, or not valid multipart",
    ),
    "unsupported_media_type": (415, "the Content-Type is neither JSON nor multipart"),
    "unsupported_image_format": (415, "the image is not JPEG, PNG or WebP"),
    "invalid_image": (422, "the image cannot be decoded (not an image, or truncated)"),
    "image_too_large": (413, "the image has more pixels than the server allows"),
    "payload_too_large": (413, "the request body or the image file is too large"),
    "text_too_long": (422, "the text is longer than the server allows"),
    "invalid_text": (422, "the text is not valid UTF-8"),
    "invalid_embedding": (422, "the embedding has the wrong size or non-finite values"),
    "not_found": (404, "no such path"),
    "method_not_allowed": (405, "the path exists but not for this method"),
    "overloaded": (503, "the queue is full; retry after the Retry-After seconds"),
    "not_ready": (503, "the model is not loaded (yet)"),
    "draining": (503, "the server is shutting down; send the request elsewhere"),
    "timeout": (504, "the request took longer than the server's request timeout"),
    "internal_error": (500, "an unexpected error; the server log has the details"),
}


class ApiError(MlkitError):
    """An error answered as JSON ``{"error": code, "detail": detail}``."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(detail)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}
