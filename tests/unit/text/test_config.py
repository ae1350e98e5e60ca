from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlkit.errors import ConfigError
from mlkit.text import (
    SentenceTransformerEncoder,
    TextConfig,
    TfidfSvdEncoder,
    build_encoder,
    parse_text_config,
)


def test_default_is_the_bundled_minilm_and_loads_nothing():
    encoder = build_encoder()
    assert isinstance(encoder, SentenceTransformerEncoder)
    assert encoder.encoder_id == "sentence-transformers:all-MiniLM-L6-v2"
    assert encoder._model is None


def test_sentence_transformer_settings_are_passed_on():
    encoder = build_encoder(
        TextConfig(
            batch_size=8, device="cpu", normalize=False, model="all-MiniLM-L6-v2"
        )
    )
    assert (encoder.batch_size, encoder.device, encoder.normalize) == (8, "cpu", False)


def test_tfidf_from_a_mapping():
    encoder = build_encoder({"kind": "tfidf", "dim": 16, "seed": 3})
    assert isinstance(encoder, TfidfSvdEncoder)
    assert (encoder.dim, encoder.seed, encoder.fitted) == (16, 3, False)
    assert build_encoder({"kind": "tfidf"}).dim == 64


def test_unknown_kind_and_unknown_keys_are_refused():
    with pytest.raises(ValidationError, match="kind"):
        TextConfig(kind="bag-of-words")
    with pytest.raises(ConfigError, match="invalid text encoder config.*kind"):
        build_encoder({"kind": "bag-of-words"})
    with pytest.raises(ConfigError, match="dimension: unknown key"):
        build_encoder({"kind": "tfidf", "dimension": 8})
    with pytest.raises(ConfigError, match="dim"):
        build_encoder({"kind": "tfidf", "dim": 0})
    with pytest.raises(ConfigError, match="profile.yaml: .*expected a mapping"):
        parse_text_config(["kind", "tfidf"], source="profile.yaml")


def test_settings_of_the_other_kind_are_refused():
    with pytest.raises(ConfigError, match=r"\['model'\] do not apply to .*'tfidf'"):
        build_encoder({"kind": "tfidf", "model": "all-MiniLM-L6-v2"})
    with pytest.raises(ConfigError, match=r"\['dim'\] do not apply"):
        build_encoder({"dim": 32})


def test_missing_model_path_is_a_config_error(tmp_path):
    missing = tmp_path / "models" / "mini"
    with pytest.raises(ConfigError, match=f"{missing}"):
        build_encoder({"model": str(missing)})


@pytest.mark.parametrize("kind", ["tfidf", "sentence-transformers"])
def test_a_dumped_config_validates_again(kind):
    config = TextConfig(kind=kind)
    assert TextConfig.model_validate(config.model_dump(mode="json")) == config
