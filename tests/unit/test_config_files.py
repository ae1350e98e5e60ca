"""Tests of the shared config-file helpers (mlkit/_config.py)."""

import pytest

from mlkit._config import merge_settings, packaged_names, read_config
from mlkit.errors import ConfigError


def test_packaged_names_and_reading_by_name_or_path(tmp_path):
    assert packaged_names("mlkit.train", "configs") == ["ci", "full"]
    data, source = read_config(
        "ci", package="mlkit.train", folder="configs", what="training config"
    )
    assert source == "training config ci" and "model" in data
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config(empty, package="mlkit.train", folder="configs", what="x") == (
        {},
        str(empty),
    )


def test_merge_settings_with_and_without_none():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert merge_settings(base, {"a": {"b": None}, "d": [2]}) == {
        "a": {"b": None, "c": 2},
        "d": [2],
    }
    assert merge_settings(base, {"a": {"b": None}}, skip_none=True) == base


def test_errors_name_the_file_or_the_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown thing 'nope'; known: ci, full"):
        read_config("nope", package="mlkit.train", folder="configs", what="thing")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping, got list"):
        read_config(bad, package="mlkit.train", folder="configs", what="thing")
