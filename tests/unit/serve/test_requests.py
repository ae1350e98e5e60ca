"""Tests of request parsing: multipart and JSON, options, strictness."""

from __future__ import annotations

import base64
import json

import pytest

from mlkit.serve.config import ServeConfig
from mlkit.serve.errors import ERROR_CODES, ApiError
from mlkit.serve.requests import parse_embed_text, parse_embeddings, parse_predict

CONFIG = ServeConfig(max_text_chars=50, max_top_k=10, max_texts=3)
BOUNDARY = "mlkit-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, bytes, str | None]) -> bytes:
    """A multipart body; each part is (name, data, filename or None)."""
    chunks = []
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def code_of(call, *args) -> str:
    with pytest.raises(ApiError) as info:
        call(*args)
    assert info.value.status == ERROR_CODES[info.value.code][0]
    return info.value.code


def test_multipart_with_options():
    body = multipart(
        ("image", b"IMAGEBYTES", "a.jpg"),
        ("text", "démangeaisons rouges".encode(), None),
        ("top_k", b"3", None),
        ("min_confidence", b"0.8", None),
    )
    request = parse_predict(body, MULTIPART, CONFIG)
    assert request.image == b"IMAGEBYTES"
    assert request.text == "démangeaisons rouges"
    assert request.top_k == 3
    assert request.thresholds.min_confidence == 0.8
    # Thresholds not sent keep the server's defaults.
    assert request.thresholds.min_margin == CONFIG.thresholds.min_margin


def test_json_with_base64_image():
    body = json.dumps(
        {"image": base64.b64encode(b"PIXELS").decode(), "text": "mole", "top_k": 2}
    ).encode()
    request = parse_predict(body, "application/json; charset=utf-8", CONFIG)
    assert (request.image, request.text, request.top_k) == (b"PIXELS", "mole", 2)
    assert request.vision_embedding is None


def test_defaults_apply():
    body = multipart(("image", b"X", "a.png"))
    request = parse_predict(body, MULTIPART, CONFIG)
    assert request.text == ""
    assert request.top_k == CONFIG.default_top_k


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"", MULTIPART, "malformed_body"),
        (b"{}", "text/plain", "unsupported_media_type"),
        (b"{}", None, "unsupported_media_type"),
        (b"{not json", "application/json", "malformed_body"),
        (b"[1, 2]", "application/json", "malformed_body"),
        (b'{"text": "x"}', "application/json", "invalid_request"),
        (b'{"image": "@@@"}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "colour": "red"}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "top_k": 0}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "top_k": -3}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "top_k": 100000}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "top_k": "3"}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "max_entropy": 2}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "min_margin": -1}', "application/json", "invalid_request"),
        (b'{"image": "QUJD", "text": "\xff\xfe"}', "application/json", "invalid_text"),
        (
            b'{"image": "QUJD", "text": "' + b"x" * 51 + b'"}',
            "application/json",
            "text_too_long",
        ),
        (b"--x\r\n", "multipart/form-data", "malformed_body"),
        (b"garbage", MULTIPART, "malformed_body"),
    ],
)
def test_bad_predict_bodies(body, content_type, code):
    assert code_of(parse_predict, body, content_type, CONFIG) == code


@pytest.mark.parametrize(
    ("parts", "code"),
    [
        ((("text", b"only text", None),), "invalid_request"),
        ((("image", b"A", "a"), ("image", b"B", "b")), "invalid_request"),
        ((("image", b"A", "a"), ("colour", b"red", None)), "invalid_request"),
        ((("image", b"A", "a"), ("text", b"\xc3\x28", None)), "invalid_text"),
        ((("image", b"A", "a"), ("top_k", b"three", None)), "invalid_request"),
        ((("image", b"A", "a"), ("min_margin", b"nan", None)), "invalid_request"),
        (
            (("image", b"A", "a"), ("text", b"a", None), ("text", b"b", None)),
            "invalid_request",
        ),
        (tuple(("image", b"A", "a") for _ in range(9)), "invalid_request"),
    ],
)
def test_bad_multipart_parts(parts, code):
    assert code_of(parse_predict, multipart(*parts), MULTIPART, CONFIG) == code


def test_embeddings_request_checks_size_and_values():
    body = json.dumps({"vision_embedding": [0.5, -1.0, 2.0], "text": "rash"}).encode()
    request = parse_embeddings(body, "application/json", CONFIG, 3)
    assert request.vision_embedding == [0.5, -1.0, 2.0]
    assert request.image is None

    assert code_of(parse_embeddings, body, "application/json", CONFIG, 4) == (
        "invalid_embedding"
    )
    assert code_of(parse_embeddings, body, "application/json", CONFIG, None) == (
        "invalid_request"
    )
    nan = b'{"vision_embedding": [0.5, NaN, 1.0]}'
    assert code_of(parse_embeddings, nan, "application/json", CONFIG, 3) == (
        "invalid_embedding"
    )
    infinite = b'{"vision_embedding": [0.5, 1e999, 1.0]}'
    assert code_of(parse_embeddings, infinite, "application/json", CONFIG, 3) == (
        "invalid_embedding"
    )
    assert code_of(parse_embeddings, b"", "application/json", CONFIG, 3) == (
        "malformed_body"
    )
    assert code_of(parse_embeddings, body, MULTIPART, CONFIG, 3) == (
        "unsupported_media_type"
    )


def test_embed_text_limits():
    ok = parse_embed_text(b'{"texts": ["a", "b"]}', "application/json", CONFIG)
    assert ok == ["a", "b"]
    many = json.dumps({"texts": ["a"] * 4}).encode()
    assert code_of(parse_embed_text, many, "application/json", CONFIG) == (
        "invalid_request"
    )
    long = json.dumps({"texts": ["x" * 51]}).encode()
    assert code_of(parse_embed_text, long, "application/json", CONFIG) == (
        "text_too_long"
    )
    empty = b'{"texts": []}'
    assert code_of(parse_embed_text, empty, "application/json", CONFIG) == (
        "invalid_request"
    )
