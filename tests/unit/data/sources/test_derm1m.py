"""Derm1M reader: tests/data/sources/derm1m/Derm1M.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from mlkit.data.sources import read_source
from mlkit.errors import DataError

HEADER = (
    "filename,hierarchical_disease_label,caption,gender,age,body_location,symptoms\n"
)


@pytest.fixture
def data(fixtures_root):
    return read_source("derm1m", fixtures_root)


def test_good_rows_are_read_with_their_fields(data, pick):
    assert data.frame["image_id"].tolist() == [
        "IIYI/1001.jpg",
        "youtube/a1b2c3_12.jpg",
        "IIYI/1002.jpg",
        "IIYI/1003.jpg",
    ]
    first = pick(data.frame, "IIYI/1001.jpg")
    assert first["sample_id"] == "derm1m:IIYI/1001.jpg"
    assert first["image_path"] == "derm1m/IIYI/1001.jpg"
    assert first["sex"] == "male"
    assert first["age"] == 45
    assert first["body_site"] == "lower leg"
    assert pd.isna(first["fitzpatrick"]) and pd.isna(first["group_id"])


def test_label_is_the_last_level(data, pick):
    assert pick(data.frame, "IIYI/1001.jpg")["raw_label"] == "nummular eczema"
    # Spaces around separators and a trailing separator are ignored.
    assert pick(data.frame, "IIYI/1002.jpg")["raw_label"] == "hives"
    assert pick(data.frame, "IIYI/1003.jpg")["raw_label"] == "vitiligo"


def test_label_separator_is_an_option(data_root, write_file):
    write_file(
        "derm1m/Derm1M.csv",
        HEADER + "IIYI/1.jpg,inflammatory|acne|acne vulgaris,Papules.,,,,\n",
    )
    data = read_source("derm1m", data_root, {"label_separator": "|"})
    assert data.frame["raw_label"].tolist() == ["acne vulgaris"]


def test_origin_is_the_first_folder_of_the_filename(data):
    assert data.frame["source_detail"].tolist() == ["IIYI", "youtube", "IIYI", "IIYI"]


def test_text_is_caption_then_patient_site_symptoms(data, pick):
    assert pick(data.frame, "IIYI/1001.jpg")["text"] == (
        "Coin-shaped eczematous plaques on the lower leg. The lesions are scaly. "
        "Patient: male, 45 years old. Site: lower leg. Symptoms: itching."
    )
    # Missing fields leave their sentence out.
    assert pick(data.frame, "youtube/a1b2c3_12.jpg")["text"] == (
        "Annular scaly plaque with central clearing. Site: trunk."
    )
    # "30.0" reads as 30; a symptom ending with "." does not get a second one.
    assert pick(data.frame, "IIYI/1002.jpg")["text"] == (
        "Transient wheals on the arms. Patient: female, 30 years old. Site: arms. "
        "Symptoms: itching."
    )
    # A caption spanning lines becomes one line.
    assert pick(data.frame, "IIYI/1003.jpg")["text"] == (
        "Depigmented macules on both hands. Patient: male, 12 years old. Site: hands."
    )


def test_rows_mentioning_dermoscopy_are_dropped_and_counted(data):
    # One in the caption ("Dermoscopic"), one in the symptoms ("DERMATOSCOPE").
    assert data.dropped == {"mentions_dermoscopy": 2}
    ids = set(data.frame["image_id"]) | set(data.quarantine["sample_id"].dropna())
    assert "pubmed/PMC6012345_fig2.png" not in ids
    assert "derm1m:twitter/88123.jpg" not in ids


def test_dermoscopy_rows_can_be_kept(fixtures_root):
    data = read_source("derm1m", fixtures_root, {"drop_dermoscopy": False})
    assert data.dropped == {}
    assert {"pubmed/PMC6012345_fig2.png", "twitter/88123.jpg"} <= set(
        data.frame["image_id"]
    )


def test_bad_rows_are_quarantined(data):
    q = data.quarantine
    assert q[["line", "reason", "sample_id"]].astype(object).values.tolist() == [
        [6, "missing_label", "derm1m:edu/lesson3/img_04.jpg"],
        [7, "invalid_value", "derm1m:reddit/q9x8.png"],
        [8, "missing_image_id", pd.NA],
        [9, "malformed_row", pd.NA],
    ]
    assert "'age'" in q["detail"][1] and "'forty'" in q["detail"][1]
    assert "expected 7 fields, got 8" in q["detail"][3]


def test_windows_separators_and_leading_slash_are_normalized(data_root, write_file):
    write_file(
        "derm1m/Derm1M.csv",
        HEADER + "/pubmed\\PMC1\\fig.png,a>b,Plaque.,,,,\n",
    )
    data = read_source("derm1m", data_root)
    assert data.frame["image_id"].tolist() == ["pubmed/PMC1/fig.png"]
    assert data.frame["image_path"].tolist() == ["derm1m/pubmed/PMC1/fig.png"]
    assert data.frame["source_detail"].tolist() == ["pubmed"]


def test_filename_without_folder_has_no_origin(data_root, write_file):
    write_file("derm1m/Derm1M.csv", HEADER + "x.jpg,a>b,Plaque.,,,,\n")
    data = read_source("derm1m", data_root)
    assert pd.isna(data.frame["source_detail"][0])
    assert data.frame["text"][0] == "Plaque."


def test_duplicate_filenames_are_an_error(data_root, write_file):
    write_file(
        "derm1m/Derm1M.csv",
        HEADER + "IIYI/1.jpg,a>b,One.,,,,\nIIYI/1.jpg,a>c,Two.,,,,\n",
    )
    with pytest.raises(DataError, match=r"'filename'.*'IIYI/1.jpg'"):
        read_source("derm1m", data_root)


def test_blocks_give_the_same_result_as_one_read(data_root, write_file, monkeypatch):
    from mlkit.data.sources import _common

    header = "filename,hierarchical_disease_label,caption,age\n"
    body = "".join(
        f"pubmed/{i}.jpg,inflammatory>eczema,Itchy patch {i}.,{age}\n"
        for i, age in enumerate(["x" if i % 7 == 0 else "30" for i in range(50)])
    )
    write_file("derm1m/Derm1M.csv", header + body + "pubmed/extra.jpg,a,b,c,d\n")
    whole = read_source("derm1m", data_root)
    original = _common.in_blocks
    monkeypatch.setattr(
        _common, "in_blocks", lambda rows, fn: original(rows, fn, block_rows=8)
    )
    from mlkit.data.sources import _derm1m

    monkeypatch.setattr(_derm1m, "in_blocks", _common.in_blocks)
    blocks = read_source("derm1m", data_root)
    pd.testing.assert_frame_equal(blocks.frame, whole.frame)
    pd.testing.assert_frame_equal(blocks.quarantine, whole.quarantine)
    assert blocks.dropped == whole.dropped
    assert blocks.quarantine["reason"].value_counts().to_dict() == {
        "invalid_value": 8,
        "malformed_row": 1,
    }
