"""A small, fast text encoder: TF-IDF weights reduced by truncated SVD.

It learns its vocabulary, inverse document frequencies and SVD directions
from the training texts (latent semantic analysis), so it needs no pretrained
model and fits in well under a second on thousands of captions. It is meant
for tiny runs and tests; the pretrained sentence encoder understands text
far better.

The fitted state is three things: the vocabulary (a JSON list of terms),
the idf weights and the SVD components (arrays). Encoding uses only those,
through one code path, so a saved and reloaded encoder gives bit-identical
vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from mlkit.errors import ConfigError, DataError
from mlkit.text.base import EncoderNotFittedError, TextEncoder, check_texts

log = logging.getLogger(__name__)

_SETTINGS = ("dim", "seed", "max_features", "ngram_range", "normalize")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class TfidfSvdEncoder(TextEncoder):
    """TF-IDF (sublinear term frequency, l2 rows) followed by truncated SVD.

    ``dim`` is the output size, ``max_features`` caps the vocabulary (most
    frequent terms kept), ``ngram_range`` says which word n-grams are terms,
    ``seed`` fixes the randomized SVD. With ``normalize`` each output row has
    unit length; a text with no known term gives a zero row either way.

    ``fit`` learns from the non-blank training texts. ``dim`` cannot exceed
    the number of distinct terms nor the number of those texts (the SVD has no
    more directions than that); ``fit`` raises ConfigError saying the largest
    allowed value rather than quietly returning fewer columns.
    """

    kind: ClassVar[str] = "tfidf"
    # Each row is transformed on its own (sparse rows times a dense matrix).
    batch_invariant: ClassVar[bool] = True

    def __init__(
        self,
        dim: int = 64,
        seed: int = 0,
        max_features: int = 20000,
        ngram_range: tuple[int, int] = (1, 2),
        normalize: bool = True,
    ) -> None:
        self._dim = _positive_int("dim", dim)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.max_features = _positive_int("max_features", max_features)
        low, high = tuple(ngram_range)
        if _positive_int("ngram_range start", low) > _positive_int(
            "ngram_range end", high
        ):
            raise ConfigError(f"ngram_range must be (low, high), got {ngram_range!r}")
        self.ngram_range = (low, high)
        self.normalize = bool(normalize)

        self.vocabulary: list[str] | None = None
        self.idf: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self._counter: Any = None
        self._id: str | None = None

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fitted(self) -> bool:
        return self.components is not None

    @property
    def encoder_id(self) -> str:
        self._require_fitted()
        if self._id is None:
            digest = hashlib.sha256()
            settings = {key: getattr(self, key) for key in _SETTINGS}
            settings["ngram_range"] = list(self.ngram_range)
            digest.update(json.dumps(settings, sort_keys=True).encode())
            digest.update(json.dumps(self.vocabulary).encode())
            digest.update(self.idf.tobytes())
            digest.update(self.components.tobytes())
            self._id = f"tfidf-svd:{digest.hexdigest()[:16]}"
        return self._id

    def fit(self, texts: Sequence[str]) -> TfidfSvdEncoder:
        """Learn vocabulary, idf and SVD directions from ``texts``.

        Blank texts are left out: they carry no terms. Raises DataError when
        no text has a term, ConfigError when ``dim`` is larger than the data
        allows.
        """
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        documents = [text for text in check_texts(texts) if text.strip()]
        if not documents:
            raise DataError(
                "cannot fit the TF-IDF encoder: no non-blank training texts",
                hint="train with the sentence-transformers encoder or add text",
            )

        vectorizer = TfidfVectorizer(
            max_features=self.max_features,
            ngram_range=self.ngram_range,
            sublinear_tf=True,
        )
        try:
            vectorizer.fit(documents)
        except ValueError as exc:  # only stop words / single characters
            raise DataError(
                f"cannot fit the TF-IDF encoder on {len(documents)} texts: {exc}"
            ) from exc
        terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)

        limit = min(len(terms), len(documents))
        if self._dim > limit:
            raise ConfigError(
                f"TF-IDF encoder dim {self._dim} is larger than the training "
                f"texts allow: {len(documents)} non-blank texts with "
                f"{len(terms)} distinct terms give at most {limit} dimensions; "
                f"set the text dim to {limit} or less"
            )

        self.vocabulary = terms
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        self.components = None
        self._counter = None
        self._id = None
        weights = self._tfidf(documents)
        svd = TruncatedSVD(n_components=self._dim, random_state=self.seed)
        svd.fit(weights)
        self.components = np.ascontiguousarray(svd.components_, dtype=np.float32)
        log.info(
            "fitted TF-IDF encoder on %d texts: %d terms, dim %d, %.0f%% variance",
            len(documents),
            len(terms),
            self._dim,
            100 * float(svd.explained_variance_ratio_.sum()),
        )
        return self

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Project ``texts`` onto the fitted SVD directions.

        Raises EncoderNotFittedError before ``fit`` and DataError for
        non-string input. Terms not seen in training are ignored.
        """
        self._require_fitted()
        items = check_texts(texts)
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = np.asarray(self._tfidf(items) @ self.components.T, dtype=np.float64)
        if self.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors.astype(np.float32)

    def _tfidf(self, texts: list[str]) -> Any:
        """Sparse l2-normalised TF-IDF rows computed from the stored state."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize as l2_rows

        if self._counter is None:
            # A fixed vocabulary needs no fitting; tokenising matches the
            # TfidfVectorizer used in fit because the settings are the same.
            self._counter = CountVectorizer(
                vocabulary=self.vocabulary, ngram_range=self.ngram_range
            )
        counts = self._counter.transform(texts).astype(np.float64).tocsr()
        counts.data = (np.log(counts.data) + 1.0) * self.idf[counts.indices]
        return l2_rows(counts, norm="l2", copy=False)

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise EncoderNotFittedError(
                "the TF-IDF text encoder is not fitted; call fit(training_texts) "
                "first, or rebuild a saved one with mlkit.text.load_encoder"
            )

    def state_dict(self) -> dict[str, np.ndarray]:
        """``idf`` (n_terms,) float64 and ``components`` (dim, n_terms) float32."""
        self._require_fitted()
        return {"idf": self.idf.copy(), "components": self.components.copy()}

    def config(self) -> dict[str, Any]:
        """Settings, the vocabulary in column order, and the ``encoder_id``."""
        self._require_fitted()
        return {
            "kind": self.kind,
            "dim": self._dim,
            "seed": self.seed,
            "max_features": self.max_features,
            "ngram_range": list(self.ngram_range),
            "normalize": self.normalize,
            "vocabulary": list(self.vocabulary),
            "encoder_id": self.encoder_id,
        }

    @classmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
    ) -> TfidfSvdEncoder:
        """Rebuild a fitted encoder from ``config()`` and ``state_dict()``.

        Raises ConfigError for unknown or missing settings and DataError when
        the arrays do not match the vocabulary and dim, or when the rebuilt
        state does not hash to the recorded ``encoder_id``.
        """
        known = {"kind", "vocabulary", "encoder_id", *_SETTINGS}
        unknown = set(config) - known
        if unknown:
            raise ConfigError(f"unknown TF-IDF encoder settings {sorted(unknown)}")
        if "vocabulary" not in config:
            raise ConfigError("a saved TF-IDF encoder config needs 'vocabulary'")
        missing = {"idf", "components"} - set(tensors)
        if missing:
            raise DataError(
                "saved TF-IDF encoder arrays are incomplete",
                expected="arrays 'idf' and 'components'",
                got=f"{sorted(tensors)}",
            )
        encoder = cls(**{k: config[k] for k in _SETTINGS if k in config})

        vocabulary = config["vocabulary"]
        if not isinstance(vocabulary, list) or not all(
            isinstance(term, str) for term in vocabulary
        ):
            raise DataError("TF-IDF vocabulary must be a list of strings")
        if len(set(vocabulary)) != len(vocabulary):
            raise DataError("TF-IDF vocabulary has repeated terms")
        idf = np.asarray(tensors["idf"], dtype=np.float64)
        components = np.asarray(tensors["components"], dtype=np.float32)
        n_terms = len(vocabulary)
        if idf.shape != (n_terms,):
            raise DataError(
                "TF-IDF idf array does not match the vocabulary",
                expected=f"shape ({n_terms},)",
                got=f"shape {idf.shape}",
            )
        if components.shape != (encoder.dim, n_terms):
            raise DataError(
                "TF-IDF components array does not match dim and vocabulary",
                expected=f"shape ({encoder.dim}, {n_terms})",
                got=f"shape {components.shape}",
            )

        encoder.vocabulary = list(vocabulary)
        encoder.idf = idf
        encoder.components = np.ascontiguousarray(components)
        recorded = config.get("encoder_id")
        if recorded is not None and recorded != encoder.encoder_id:
            raise DataError(
                "saved TF-IDF encoder state does not hash to its recorded id",
                expected=repr(recorded),
                got=repr(encoder.encoder_id),
            )
        return encoder
