"""Text encoder configuration and the one place that builds an encoder from it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)

from mlkit.errors import validate_config
from mlkit.text.base import TextEncoder

log = logging.getLogger(__name__)

# Settings that only one kind of encoder uses; giving one to the other kind is
# a mistake worth reporting rather than ignoring.
_ONLY_FOR = {
    "sentence-transformers": {"model", "device", "batch_size"},
    "tfidf": {"dim", "seed", "max_features"},
}


class TextConfig(BaseModel):
    """Which text encoder to use and how.

    ``kind`` is "sentence-transformers" (pretrained; ``model`` is the default
    all-MiniLM-L6-v2, a local directory or a cached model name; ``device`` and
    ``batch_size`` tune inference) or "tfidf" (fitted on the training texts;
    ``dim`` output size, default 64, ``seed``, ``max_features``). ``normalize``
    makes every output row unit length. A setting of the other kind is an
    error, not silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sentence-transformers", "tfidf"] = "sentence-transformers"
    model: str | None = None
    device: str | None = None
    batch_size: PositiveInt = 64
    dim: PositiveInt | None = None
    seed: NonNegativeInt = 0
    max_features: PositiveInt = 20000
    normalize: bool = True

    @model_validator(mode="after")
    def _settings_match_kind(self) -> TextConfig:
        foreign = set()
        for kind, names in _ONLY_FOR.items():
            if kind != self.kind:
                # A setting of the other kind at its default value is what a
                # dumped config carries; only a changed one is a mistake.
                foreign |= {
                    name
                    for name in names & self.model_fields_set
                    if getattr(self, name) != type(self).model_fields[name].default
                }
        if foreign:
            raise ValueError(
                f"{sorted(foreign)} do not apply to text encoder kind {self.kind!r}"
            )
        return self


def parse_text_config(
    data: TextConfig | Mapping[str, Any] | None, *, source: str = "text config"
) -> TextConfig:
    """Validate ``data`` into a TextConfig; None means all defaults.

    Raises ConfigError naming ``source`` and every invalid field.
    """
    return validate_config(TextConfig, data, what="text encoder config", source=source)


def build_encoder(cfg: TextConfig | Mapping[str, Any] | None = None) -> TextEncoder:
    """Build the (unfitted) encoder that ``cfg`` describes; loads no model.

    Raises ConfigError for an invalid config or a model path that does not
    exist.
    """
    cfg = parse_text_config(cfg)
    if cfg.kind == "tfidf":
        from mlkit.text.tfidf import TfidfSvdEncoder

        return TfidfSvdEncoder(
            dim=64 if cfg.dim is None else cfg.dim,
            seed=cfg.seed,
            max_features=cfg.max_features,
            normalize=cfg.normalize,
        )

    from mlkit.text.sentence_transformer import (
        DEFAULT_MODEL,
        SentenceTransformerEncoder,
    )

    return SentenceTransformerEncoder(
        model=cfg.model or DEFAULT_MODEL,
        device=cfg.device,
        batch_size=cfg.batch_size,
        normalize=cfg.normalize,
    )
