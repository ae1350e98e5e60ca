"""The public API of mlkit.data.sources: names, options, and the shared schema."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from pydantic import BaseModel

import mlkit.data.sources as sources
from mlkit.data import schema
from mlkit.data.sources import SOURCE_OPTIONS, SourceData, read_source
from mlkit.errors import ConfigError

REASONS = {"malformed_row", "missing_image_id", "missing_label", "invalid_value"}


def test_public_names():
    assert sorted(sources.__all__) == [
        "SOURCE_OPTIONS",
        "SourceData",
        "apply_skincap",
        "read_source",
    ]
    assert set(SOURCE_OPTIONS) == set(schema.SOURCES)


@pytest.mark.parametrize("name", schema.DATASETS)
def test_every_dataset_gives_standard_rows(fixtures_root, name):
    data = read_source(name, str(fixtures_root))
    assert isinstance(data, SourceData)
    assert data.dataset == name
    frame = data.frame
    assert list(frame.columns) == list(schema.COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        c: str(t) for c, t in schema.COLUMNS.items()
    }
    assert len(frame) > 0
    assert (frame["dataset"] == name).all()
    assert frame["sample_id"].is_unique
    assert (frame["sample_id"] == name + ":" + frame["image_id"]).all()
    assert frame["label"].isna().all() and frame["split"].isna().all()
    assert frame["text"].notna().all()
    assert frame["raw_label"].notna().all()
    paths = frame["image_path"]
    assert paths.str.startswith(f"{name}/").all()
    assert not paths.str.contains("\\\\", regex=False).any()
    assert set(frame["fitzpatrick"].dropna()) <= {1, 2, 3, 4, 5, 6}
    assert set(frame["fitzpatrick_group"].dropna()) <= {"I-II", "III-IV", "V-VI"}
    assert list(data.quarantine.columns) == list(schema.QUARANTINE_COLUMNS)
    assert set(data.quarantine["reason"]) <= REASONS
    assert len(data.quarantine) > 0
    assert all(path.is_file() for path in data.files)


def test_unknown_dataset_lists_the_known_ones(fixtures_root):
    with pytest.raises(ConfigError) as caught:
        read_source("ham10000", fixtures_root)
    message = str(caught.value)
    assert "'ham10000'" in message
    assert all(name in message for name in schema.DATASETS)


def test_skincap_is_not_read_as_a_dataset(fixtures_root):
    with pytest.raises(ConfigError, match="apply_skincap"):
        read_source("skincap", fixtures_root)


def test_unknown_option_is_a_clear_error(fixtures_root):
    with pytest.raises(ConfigError) as caught:
        read_source("derm1m", fixtures_root, {"label_sep": "|"})
    message = str(caught.value)
    assert "label_sep" in message
    assert "label_separator" in message  # the known options are listed


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"encoding": "klingon"}, "unknown text encoding"),
        ({"dir": "../elsewhere"}, "inside the data root"),
        ({"dir": "/abs"}, "inside the data root"),
    ],
)
def test_bad_option_values_are_config_errors(fixtures_root, options, problem):
    with pytest.raises(ConfigError, match=problem):
        read_source("ddi", fixtures_root, options)


def test_options_can_be_the_model(fixtures_root):
    options = SOURCE_OPTIONS["ddi"](csv="ddi_metadata.csv")
    assert len(read_source("ddi", fixtures_root, options).frame) == 4
    with pytest.raises(ConfigError, match="DdiOptions"):
        read_source("ddi", fixtures_root, SOURCE_OPTIONS["isic"]())


def test_options_models_forbid_unknown_keys():
    for name, model in SOURCE_OPTIONS.items():
        assert issubclass(model, BaseModel)
        assert model.model_config.get("extra") == "forbid", name
        assert model().encoding == "utf-8"


def test_defaults_from_the_layout():
    assert SOURCE_OPTIONS["derm1m"]().label_separator == ">"
    assert SOURCE_OPTIONS["fitzpatrick17k"]().drop_wrongly_labelled is True
    assert "dermoscopic" not in SOURCE_OPTIONS["isic"]().keep_image_types


def test_dir_option_moves_the_folder_and_the_image_paths(data_root, fixtures_root):
    shutil.copytree(fixtures_root / "derm1m", data_root / "raw" / "derm1m-v2")
    data = read_source("derm1m", data_root, {"dir": "raw/derm1m-v2"})
    assert data.frame["image_path"][0] == "raw/derm1m-v2/IIYI/1001.jpg"
    assert (data.quarantine["source_file"] == "raw/derm1m-v2/Derm1M.csv").all()
    assert pd.notna(data.frame["text"][0])
