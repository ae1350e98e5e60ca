"""DDI reader: tests/data/sources/ddi/ddi_metadata.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from mlkit.data.sources import read_source


@pytest.fixture
def data(fixtures_root):
    return read_source("ddi", fixtures_root)


def test_good_rows_are_read_with_their_fields(data, pick):
    assert data.frame["image_id"].tolist() == [
        "000001.png",
        "000002.png",
        "000003.png",
        "000008.png",
    ]
    first = pick(data.frame, "000001.png")
    assert first["sample_id"] == "ddi:000001.png"
    assert first["image_path"] == "ddi/images/000001.png"
    assert first["raw_label"] == "melanoma-in-situ"
    assert first["text"] == ""
    assert data.dropped == {}


def test_skin_tone_gives_only_the_group(data):
    assert data.frame["fitzpatrick"].isna().all()
    assert data.frame["fitzpatrick_group"].tolist() == [
        "V-VI",
        "V-VI",
        "I-II",
        "III-IV",
    ]


def test_malignant_is_parsed_whatever_the_case(data):
    assert data.frame["malignant"].tolist() == [True, True, False, False]


def test_the_leading_index_column_is_optional(data_root, write_file):
    write_file(
        "ddi/ddi_metadata.csv",
        "DDI_file,skin_tone,malignant,disease\n000001.png,56,True,melanoma-in-situ\n",
    )
    data = read_source("ddi", data_root)
    assert data.frame["image_id"].tolist() == ["000001.png"]
    assert data.frame["fitzpatrick_group"].tolist() == ["V-VI"]


def test_bad_rows_are_quarantined(data):
    q = data.quarantine
    assert q[["line", "reason", "sample_id"]].astype(object).values.tolist() == [
        [5, "missing_label", "ddi:000004.png"],
        [6, "invalid_value", "ddi:000005.png"],
        [7, "invalid_value", "ddi:000006.png"],
        [8, "malformed_row", pd.NA],
    ]
    assert "skin_tone" in q["detail"][1] and "'78'" in q["detail"][1]
    assert "malignant" in q["detail"][2] and "'maybe'" in q["detail"][2]


def test_empty_skin_tone_is_unknown(data_root, write_file):
    write_file(
        "ddi/ddi_metadata.csv",
        ",DDI_file,skin_tone,malignant,disease\n0,000001.png,,False,acne-cystic\n",
    )
    data = read_source("ddi", data_root)
    assert data.quarantine.empty
    assert pd.isna(data.frame["fitzpatrick_group"][0])
