"""Fixtures for the text encoder tests: offline Hugging Face, a counting fake."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from mlkit.text import TextEncoder, check_texts


@pytest.fixture(scope="session", autouse=True)
def offline_hugging_face():
    """Make the Hugging Face libraries refuse the network for these tests.

    The library itself passes local_files_only; this is a second fence, set
    before sentence-transformers is first imported (the hub reads it then).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield


class CountingEncoder(TextEncoder):
    """A fake encoder that records every text it is asked to encode.

    Each vector is a pure function of the text (and the name), so cached and
    fresh vectors can be compared exactly.
    """

    kind: ClassVar[str] = "counting"

    def __init__(self, name: str = "a", dim: int = 4) -> None:
        self.name = name
        self._dim = dim
        self.calls: list[list[str]] = []

    @property
    def encoder_id(self) -> str:
        return f"counting:{self.name}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def encoded(self) -> list[str]:
        return [text for call in self.calls for text in call]

    def vector(self, text: str) -> np.ndarray:
        digest = hashlib.sha256(f"{self.name}|{text}".encode()).digest()
        return np.frombuffer(digest, dtype=np.uint8)[: self._dim].astype(np.float32)

    def encode(self, texts):
        items = check_texts(texts)
        self.calls.append(items)
        return np.stack([self.vector(t) for t in items]).reshape(-1, self._dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "dim": self._dim}

    @classmethod
    def from_state(cls, config: Mapping[str, Any], tensors) -> CountingEncoder:
        return cls(config["name"], config["dim"])


@pytest.fixture
def counting_encoder():
    """Factory: ``counting_encoder(name="a", dim=4)`` -> a fresh CountingEncoder."""
    return CountingEncoder
