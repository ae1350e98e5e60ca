"""Reading request bodies into checked prediction requests.

``/v1/predict`` takes multipart (an ``image`` file part and form fields) or
JSON (the image as base64). Both are parsed from the raw body, which the
server has already read under its size limit, into the same
``PredictRequest``. Anything unexpected -- an unknown field, a second image,
text that is not UTF-8, an out-of-bounds option -- is an ApiError that names
it, never a silent default.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header

from mlkit.errors import describe_validation_error
from mlkit.serve.config import ServeConfig, Thresholds
from mlkit.serve.errors import ApiError

_FORM_FIELDS = ("text", "top_k", *Thresholds.model_fields)
_MAX_PARTS = 8


class _Options(BaseModel):
    """The options every prediction request may carry."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    top_k: int | None = Field(default=None)
    min_confidence: float | None = Field(default=None, allow_inf_nan=False)
    min_margin: float | None = Field(default=None, allow_inf_nan=False)
    max_entropy: float | None = Field(default=None, allow_inf_nan=False)


class _PredictJSON(_Options):
    image: str


class _EmbeddingsJSON(_Options):
    vision_embedding: list[float]


class _EmbedTextJSON(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class PredictRequest:
    """A checked request: image bytes or a vision embedding, text, options."""

    image: bytes | None
    vision_embedding: list[float] | None
    text: str
    top_k: int
    thresholds: Thresholds


def media_type(content_type: str | None) -> tuple[str, dict[bytes, bytes]]:
    """The lower-case media type and its parameters, ``("", {})`` when absent."""
    if not content_type:
        return "", {}
    kind, params = parse_options_header(content_type)
    return kind.decode("latin-1").lower(), params


def parse_predict(
    body: bytes, content_type: str | None, cfg: ServeConfig
) -> PredictRequest:
    """A PredictRequest from a ``/v1/predict`` body (multipart or JSON)."""
    kind, params = media_type(content_type)
    if not body:
        raise ApiError("malformed_body", "the request body is empty")
    if kind == "multipart/form-data":
        fields, image = _parse_multipart(body, params)
        if image is None:
            raise ApiError(
                "invalid_request", "the multipart body has no 'image' file part"
            )
        return _request(image, None, _validate(_Options, fields), cfg)
    if kind == "application/json":
        data = _validate(_PredictJSON, _json_object(body))
        return _request(_base64(data.image), None, data, cfg)
    raise ApiError(
        "unsupported_media_type",
        f"Content-Type {content_type or '(none)'!r} is not accepted here; send "
        "multipart/form-data with an 'image' file, or application/json with a "
        "base64 'image'",
    )


def parse_embeddings(
    body: bytes, content_type: str | None, cfg: ServeConfig, vision_dim: int | None
) -> PredictRequest:
    """A PredictRequest from a ``/v1/predict/embeddings`` JSON body."""
    data = _validate(_EmbeddingsJSON, _json_body(body, content_type))
    if vision_dim is None:
        raise ApiError(
            "invalid_request",
            "this model uses no image, so it takes no vision embedding",
        )
    vector = data.vision_embedding
    if len(vector) != vision_dim:
        raise ApiError(
            "invalid_embedding",
            f"vision_embedding has {len(vector)} values; this model's vision "
            f"encoder gives {vision_dim}",
        )
    bad = next((i for i, v in enumerate(vector) if not math.isfinite(v)), None)
    if bad is not None:
        raise ApiError(
            "invalid_embedding",
            f"vision_embedding[{bad}] is {vector[bad]}; every value must be finite",
        )
    return _request(None, vector, data, cfg)


def parse_embed_text(
    body: bytes, content_type: str | None, cfg: ServeConfig
) -> list[str]:
    """The texts of a ``/v1/embed-text`` JSON body, checked against the limits."""
    data = _validate(_EmbedTextJSON, _json_body(body, content_type))
    if len(data.texts) > cfg.max_texts:
        raise ApiError(
            "invalid_request",
            f"{len(data.texts)} texts in one request; the limit is {cfg.max_texts}",
        )
    for i, text in enumerate(data.texts):
        _check_text(text, cfg, f"texts[{i}]")
    return data.texts


def _request(
    image: bytes | None,
    vision_embedding: list[float] | None,
    options: _Options,
    cfg: ServeConfig,
) -> PredictRequest:
    text = options.text or ""
    _check_text(text, cfg, "text")
    top_k = cfg.default_top_k if options.top_k is None else options.top_k
    if not 1 <= top_k <= cfg.max_top_k:
        raise ApiError(
            "invalid_request", f"top_k is {top_k}; it must be from 1 to {cfg.max_top_k}"
        )
    overrides = {
        name: getattr(options, name)
        for name in Thresholds.model_fields
        if getattr(options, name) is not None
    }
    try:
        thresholds = cfg.thresholds.model_copy(update=overrides)
        Thresholds.model_validate(thresholds.model_dump())
    except ValidationError as exc:
        raise ApiError("invalid_request", describe_validation_error(exc)) from None
    return PredictRequest(image, vision_embedding, text, top_k, thresholds)


def _check_text(text: str, cfg: ServeConfig, name: str) -> None:
    if len(text) > cfg.max_text_chars:
        raise ApiError(
            "text_too_long",
            f"{name} has {len(text)} characters; the limit is {cfg.max_text_chars}",
        )


def _validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError("invalid_request", describe_validation_error(exc)) from None


def _json_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    kind, _ = media_type(content_type)
    if kind != "application/json":
        raise ApiError(
            "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r} is not accepted here; "
            "send application/json",
        )
    if not body:
        raise ApiError("malformed_body", "the request body is empty")
    return _json_object(body)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError(
            "invalid_text", f"the JSON body is not valid UTF-8 (byte {exc.start})"
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError("malformed_body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(
            "malformed_body",
            f"the JSON body must be an object, got {type(data).__name__}",
        )
    return data


def _base64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_request", "image is not valid base64") from None


def _parse_multipart(
    body: bytes, params: dict[bytes, bytes]
) -> tuple[dict[str, Any], bytes | None]:
    """(form fields, image bytes) of a multipart body, strictly.

    Form field values must be UTF-8; numbers are parsed here so that the JSON
    and multipart forms validate the same way.
    """
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError("malformed_body", "multipart Content-Type without a boundary")

    parts: list[dict[str, Any]] = []
    headers: dict[bytes, bytes] = {}
    field = bytearray()

    def on_part_begin() -> None:
        if len(parts) >= _MAX_PARTS:
            raise ApiError(
                "invalid_request", f"more than {_MAX_PARTS} parts in the multipart body"
            )
        headers.clear()
        parts.append({"data": bytearray()})

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = bytes(field).lower()
        headers[key] = headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        field.clear()

    def on_headers_finished() -> None:
        parts[-1]["headers"] = dict(headers)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart raises several error types
        raise ApiError(
            "malformed_body", f"the multipart body is invalid: {exc}"
        ) from None
    if not parts:
        raise ApiError("malformed_body", "the multipart body has no parts")

    fields: dict[str, Any] = {}
    image: bytes | None = None
    for part in parts:
        disposition = part.get("headers", {}).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "image":
            if image is not None:
                raise ApiError("invalid_request", "more than one 'image' part")
            image = bytes(part["data"])
        elif name in _FORM_FIELDS:
            if name in fields:
                raise ApiError("invalid_request", f"the field {name!r} appears twice")
            fields[name] = _form_value(name, bytes(part["data"]))
        else:
            raise ApiError(
                "invalid_request",
                f"unknown multipart field {name!r}; known: image, "
                f"{', '.join(_FORM_FIELDS)}",
            )
    return fields, image


def _form_value(name: str, raw: bytes) -> Any:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            "invalid_text", f"the field {name!r} is not valid UTF-8 (byte {exc.start})"
        ) from None
    if name == "text":
        return value
    try:
        return int(value) if name == "top_k" else float(value)
    except ValueError:
        kind = "an integer" if name == "top_k" else "a number"
        raise ApiError(
            "invalid_request", f"the field {name!r} must be {kind}, got {value!r:.40}"
        ) from None
