"""What every text encoder offers, and how a fitted encoder is saved and rebuilt.

An encoder turns a list of strings into a float32 matrix with one row per
string. Its ``encoder_id`` names everything that decides those rows (the model,
or a hash of the fitted state), so embeddings cached under one id are valid
for every encoder with the same id and for no other.

A fitted encoder is saved as two files, never as a pickle: its arrays as
safetensors and its settings as JSON. ``load_encoder`` rebuilds it from the
two, and the rebuilt encoder gives the same rows as the original.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlkit._io import atomic_path, write_json
from mlkit.errors import ConfigError, DataError, MlkitError

log = logging.getLogger(__name__)

CONFIG_FILE = "text_encoder.json"
TENSORS_FILE = "text_encoder.safetensors"


class EncoderNotFittedError(MlkitError, RuntimeError):
    """An encoder that learns from data was used before ``fit``."""


class TextEncoder(abc.ABC):
    """Turns texts into fixed-size float32 vectors.

    Subclasses set ``kind`` (the name used in configs and saved files) and
    implement ``encoder_id``, ``dim``, ``encode``, ``config`` and
    ``from_state``. Encoders that learn from data also override ``fit`` and
    ``state_dict``.
    """

    kind: ClassVar[str]
    # True when a text's vector does not depend on the other texts encoded in
    # the same call, to the last bit; a server may then batch texts freely.
    batch_invariant: ClassVar[bool] = False

    def token_counts(self, texts: Sequence[str]) -> list[int] | None:
        """Tokens per text as the encoder sees them, or None when it has none.

        An encoder that pads a batch to its longest text may still give texts
        of one token count the same bits together as alone; a server can then
        batch such texts (see ``mlkit.serve.predictor``).
        """
        return None

    @property
    @abc.abstractmethod
    def encoder_id(self) -> str:
        """Stable name of everything that decides the output vectors."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of each output vector."""

    def fit(self, texts: Sequence[str]) -> TextEncoder:
        """Learn from training texts; pretrained encoders learn nothing."""
        check_texts(texts)
        return self

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim).

        Raises DataError when ``texts`` is not a sequence of strings.
        """

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that, with ``config()``, rebuild this encoder."""
        return {}

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings that, with ``state_dict()``, rebuild this encoder.

        Always holds ``kind``.
        """

    @classmethod
    @abc.abstractmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
    ) -> TextEncoder:
        """Rebuild an encoder from ``config()`` and ``state_dict()`` output."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim})"


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise DataError naming the first non-string.

    A single string is refused too: it is a sequence of characters, and
    encoding it one character at a time is never what the caller meant.
    """
    if isinstance(texts, str | bytes):
        raise DataError(
            "texts must be a sequence of strings",
            expected="a list of strings",
            got=f"a single {type(texts).__name__}",
            hint="wrap it in a list",
        )
    try:
        items = list(texts)
    except TypeError:
        raise DataError(
            "texts must be a sequence of strings",
            expected="a list of strings",
            got=type(texts).__name__,
        ) from None
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise DataError(
                f"text at position {index} is not a string",
                expected="str",
                got=f"{type(text).__name__} {text!r}",
            )
    return items


def _encoder_classes() -> dict[str, type[TextEncoder]]:
    # Imported here, not at module level: the encoder modules import this one.
    from mlkit.text.sentence_transformer import SentenceTransformerEncoder
    from mlkit.text.tfidf import TfidfSvdEncoder

    return {cls.kind: cls for cls in (SentenceTransformerEncoder, TfidfSvdEncoder)}


def load_encoder(
    config: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None
) -> TextEncoder:
    """Rebuild an encoder from its ``config()`` and ``state_dict()``.

    Raises ConfigError when ``config`` has no known ``kind``, and DataError
    when the arrays do not fit the config.
    """
    classes = _encoder_classes()
    kind = config.get("kind") if isinstance(config, Mapping) else None
    if kind not in classes:
        raise ConfigError(
            f"unknown text encoder kind {kind!r}; expected one of {sorted(classes)}"
        )
    return classes[kind].from_state(config, dict(tensors or {}))


def save_encoder(directory: str | Path, encoder: TextEncoder) -> Path:
    """Write ``encoder`` to ``directory`` as safetensors + JSON; return the JSON path.

    Both files are written atomically. The JSON also records ``encoder_id`` and
    ``dim`` so that a reader can check them without rebuilding the encoder.
    Raises EncoderNotFittedError for an encoder that needs fitting first.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    tensors = {
        name: np.ascontiguousarray(array)
        for name, array in encoder.state_dict().items()
    }
    payload = {
        "config": encoder.config(),
        "encoder_id": encoder.encoder_id,
        "dim": encoder.dim,
        "tensors": {name: list(array.shape) for name, array in tensors.items()},
    }

    with atomic_path(directory / TENSORS_FILE) as tmp:
        save_file(tensors, str(tmp))
    path = write_json(directory / CONFIG_FILE, payload)
    log.info("saved text encoder %s to %s", payload["encoder_id"], directory)
    return path


def read_encoder(directory: str | Path) -> TextEncoder:
    """Rebuild the encoder that ``save_encoder`` wrote to ``directory``.

    Raises DataError when a file is missing or unreadable, or when the rebuilt
    encoder's id differs from the one recorded at save time (the files do not
    belong together, or were edited).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    tensors_path = directory / TENSORS_FILE
    for path in (config_path, tensors_path):
        if not path.is_file():
            raise DataError(
                "saved text encoder file is missing",
                path=path,
                hint="save the encoder with mlkit.text.save_encoder",
            )

    try:
        payload = json.loads(config_path.read_text(encoding="utf-8"))
        config = payload["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"not a saved text encoder: {exc}", path=config_path) from exc
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"unreadable tensors: {exc}", path=tensors_path) from exc

    encoder = load_encoder(config, tensors)
    recorded = payload.get("encoder_id")
    if recorded is not None and recorded != encoder.encoder_id:
        raise DataError(
            "rebuilt text encoder does not match the saved one",
            path=config_path,
            expected=f"encoder_id {recorded!r}",
            got=repr(encoder.encoder_id),
        )
    return encoder
