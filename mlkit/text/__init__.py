"""Text encoders for the text half of the classifier, and their embedding cache.

Two encoders share one interface (``TextEncoder``): a pretrained
sentence-transformers model (default all-MiniLM-L6-v2, bundled, offline) and a
small TF-IDF + SVD encoder fitted on the training texts. ``TextConfig`` and
``build_encoder`` choose between them; ``EmbeddingCache`` keeps embeddings on
disk so that reruns encode nothing twice.

Importing this package loads no model and no deep-learning library;
sentence-transformers and scikit-learn are imported on first use.
"""

from mlkit.text.base import (
    EncoderNotFittedError,
    TextEncoder,
    check_texts,
    load_encoder,
    read_encoder,
    save_encoder,
)
from mlkit.text.cache import EmbeddingCache, text_sha256
from mlkit.text.config import TextConfig, build_encoder, parse_text_config
from mlkit.text.sentence_transformer import DEFAULT_MODEL, SentenceTransformerEncoder
from mlkit.text.tfidf import TfidfSvdEncoder

__all__ = [
    "DEFAULT_MODEL",
    "EmbeddingCache",
    "EncoderNotFittedError",
    "SentenceTransformerEncoder",
    "TextConfig",
    "TextEncoder",
    "TfidfSvdEncoder",
    "build_encoder",
    "check_texts",
    "load_encoder",
    "parse_text_config",
    "read_encoder",
    "save_encoder",
    "text_sha256",
]
