from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlkit.errors import ConfigError, DataError
from mlkit.text import (
    EncoderNotFittedError,
    TfidfSvdEncoder,
    load_encoder,
    read_encoder,
    save_encoder,
)

TRAIN = [
    "red scaly plaque on the elbow with silvery scale",
    "silvery scaly plaques on both knees and elbows",
    "itchy red weals that come and go within hours",
    "raised itchy weals after eating shellfish",
    "dark irregular mole that has grown on the back",
    "a mole with irregular border and several colours",
    "pimples and blackheads on the forehead and cheeks",
    "inflamed pimples and cysts on the jaw",
]
QUERIES = ["scaly silvery plaque on knees", "irregular dark mole", "xyzzy"]


@pytest.fixture(scope="module")
def fitted():
    return TfidfSvdEncoder(dim=4, seed=0).fit(TRAIN)


def test_encode_shape_dtype_and_unit_rows(fitted):
    emb = fitted.encode(QUERIES)
    assert emb.shape == (3, 4) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[:2], axis=1), 1.0, rtol=1e-5)


def test_text_without_known_terms_gives_zero_row(fitted):
    assert not fitted.encode(["xyzzy plugh"]).any()
    assert fitted.encode([]).shape == (0, 4)


def test_similar_texts_are_closer(fitted):
    psoriasis, mole, _ = fitted.encode(QUERIES)
    train = fitted.encode(TRAIN)
    assert psoriasis @ train[1] > psoriasis @ train[4]
    assert mole @ train[4] > mole @ train[1]


def test_fit_is_deterministic_and_id_follows_the_state(fitted):
    again = TfidfSvdEncoder(dim=4, seed=0).fit(TRAIN)
    np.testing.assert_array_equal(again.encode(QUERIES), fitted.encode(QUERIES))
    assert again.encoder_id == fitted.encoder_id
    assert fitted.encoder_id.startswith("tfidf-svd:")

    other = TfidfSvdEncoder(dim=4, seed=0).fit(TRAIN[:-1])
    assert other.encoder_id != fitted.encoder_id


def test_blank_training_texts_are_ignored(fitted):
    padded = TfidfSvdEncoder(dim=4, seed=0).fit(TRAIN + ["", "  "])
    assert padded.encoder_id == fitted.encoder_id


def test_state_round_trip_through_safetensors_and_json(fitted, tmp_path):
    save_file(fitted.state_dict(), str(tmp_path / "state.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(fitted.config()))

    config = json.loads((tmp_path / "config.json").read_text())
    rebuilt = load_encoder(config, load_file(str(tmp_path / "state.safetensors")))

    assert isinstance(rebuilt, TfidfSvdEncoder)
    assert rebuilt.encoder_id == fitted.encoder_id
    np.testing.assert_array_equal(rebuilt.encode(QUERIES), fitted.encode(QUERIES))
    assert config["vocabulary"] == fitted.vocabulary


def test_save_and_read_encoder_directory(fitted, tmp_path):
    path = save_encoder(tmp_path / "enc", fitted)
    rebuilt = read_encoder(tmp_path / "enc")

    names = sorted(p.name for p in (tmp_path / "enc").iterdir())
    assert names == ["text_encoder.json", "text_encoder.safetensors"]
    assert json.loads(path.read_text())["tensors"]["components"] == [
        4,
        len(fitted.vocabulary),
    ]
    np.testing.assert_array_equal(rebuilt.encode(TRAIN), fitted.encode(TRAIN))


def test_edited_state_is_detected(fitted):
    tensors = fitted.state_dict()
    tensors["idf"] = tensors["idf"] * 2
    with pytest.raises(DataError, match="does not hash to its recorded id"):
        load_encoder(fitted.config(), tensors)


def test_mismatched_arrays_are_refused(fitted):
    tensors = fitted.state_dict()
    tensors["components"] = tensors["components"][:2]
    with pytest.raises(DataError, match=r"components.*expected shape \(4, "):
        load_encoder(fitted.config(), tensors)
    with pytest.raises(DataError, match="incomplete"):
        load_encoder(fitted.config(), {"idf": tensors["idf"]})
    config = fitted.config() | {"vocabulary": fitted.vocabulary[:-1]}
    with pytest.raises(DataError, match="idf array does not match"):
        load_encoder(config, fitted.state_dict())
    with pytest.raises(ConfigError, match="unknown TF-IDF encoder settings"):
        load_encoder(fitted.config() | {"stop_words": "english"}, fitted.state_dict())


def test_encode_before_fit_is_refused():
    encoder = TfidfSvdEncoder(dim=4)
    for use in (
        lambda: encoder.encode(["a"]),
        encoder.state_dict,
        encoder.config,
        lambda: encoder.encoder_id,
    ):
        with pytest.raises(EncoderNotFittedError, match="not fitted; call fit"):
            use()
    assert encoder.dim == 4


def test_dim_larger_than_the_data_allows_names_the_limit():
    with pytest.raises(ConfigError, match="dim 9 .* at most 8 dimensions"):
        TfidfSvdEncoder(dim=9).fit(TRAIN)
    tiny = ["alpha beta", "beta gamma", "alpha gamma", "alpha", "beta"]
    with pytest.raises(ConfigError, match="3 distinct terms give at most 3"):
        TfidfSvdEncoder(dim=4, ngram_range=(1, 1)).fit(tiny)


def test_bad_texts_and_settings_are_refused(fitted):
    with pytest.raises(DataError, match="position 1 is not a string"):
        fitted.encode(["fine", 7])
    with pytest.raises(DataError, match="single str"):
        fitted.encode("one string")
    with pytest.raises(DataError, match="no non-blank training texts"):
        TfidfSvdEncoder(dim=2).fit(["", " "])
    with pytest.raises(DataError, match="cannot fit"):
        TfidfSvdEncoder(dim=1).fit(["a b c", "d"])  # no token of two letters
    with pytest.raises(ConfigError, match="dim must be a positive integer"):
        TfidfSvdEncoder(dim=0)
    with pytest.raises(ConfigError, match="ngram_range"):
        TfidfSvdEncoder(ngram_range=(2, 1))
