from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlkit.errors import ConfigError, DataError
from mlkit.text import (
    EncoderNotFittedError,
    TfidfSvdEncoder,
    check_texts,
    load_encoder,
    read_encoder,
    save_encoder,
)

TEXTS = ["red scaly plaque", "itchy red weals", "dark irregular mole", "red papule"]


def test_importing_the_package_loads_no_heavy_library():
    heavy = ["torch", "sentence_transformers", "transformers", "sklearn", "pyarrow"]
    code = (
        f"import sys, mlkit.text\nprint([m for m in {heavy!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_check_texts_accepts_any_sequence_of_strings():
    assert check_texts(("a", "")) == ["a", ""]
    assert check_texts(t for t in ["x"]) == ["x"]
    with pytest.raises(DataError, match="position 2 is not a string.*got int 5"):
        check_texts(["a", "b", 5])
    with pytest.raises(DataError, match="single bytes"):
        check_texts(b"raw")
    with pytest.raises(DataError, match="got int"):
        check_texts(3)


def test_load_encoder_needs_a_known_kind():
    with pytest.raises(ConfigError, match="unknown text encoder kind 'bow'"):
        load_encoder({"kind": "bow"}, {})
    with pytest.raises(ConfigError, match="kind None"):
        load_encoder({}, {})


def test_read_encoder_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(DataError, match="text_encoder.json: saved text encoder file"):
        read_encoder(tmp_path)

    save_encoder(tmp_path, TfidfSvdEncoder(dim=2).fit(TEXTS))
    config_path = tmp_path / "text_encoder.json"
    payload = json.loads(config_path.read_text())

    config_path.write_text(json.dumps(payload | {"encoder_id": "tfidf-svd:0"}))
    with pytest.raises(DataError, match="does not match the saved one"):
        read_encoder(tmp_path)

    config_path.write_text("{not json")
    with pytest.raises(DataError, match="not a saved text encoder"):
        read_encoder(tmp_path)

    config_path.write_text(json.dumps(payload))
    (tmp_path / "text_encoder.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(DataError, match="unreadable tensors"):
        read_encoder(tmp_path)


def test_saving_an_unfitted_encoder_writes_nothing(tmp_path):
    with pytest.raises(EncoderNotFittedError, match="not fitted"):
        save_encoder(tmp_path / "enc", TfidfSvdEncoder(dim=2))
    assert not (tmp_path / "enc").exists()
