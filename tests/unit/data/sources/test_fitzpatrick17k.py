"""Fitzpatrick17k reader: tests/data/sources/fitzpatrick17k/fitzpatrick17k.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from mlkit.data.sources import read_source

HEADER = (
    "md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,"
    "three_partition_label,qc,url,url_alphanum\n"
)


@pytest.fixture
def data(fixtures_root):
    return read_source("fitzpatrick17k", fixtures_root)


def test_good_rows_are_read_with_their_fields(data, pick):
    assert data.frame["image_id"].tolist() == [
        "fd06d13de341cc75ad679916c5d7e6a6",
        "a4bb4e5206c4e89a303f470576fc5253",
        "c94ce27e389f96bda998e7c3fa5c4a2e",
        "5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c",
    ]
    first = pick(data.frame, "fd06d13de341cc75ad679916c5d7e6a6")
    assert first["sample_id"] == "fitzpatrick17k:fd06d13de341cc75ad679916c5d7e6a6"
    assert first["image_path"] == (
        "fitzpatrick17k/images/fd06d13de341cc75ad679916c5d7e6a6.jpg"
    )
    assert first["raw_label"] == "prurigo nodularis"
    assert first["text"] == ""
    assert first["fitzpatrick"] == 4
    assert first["fitzpatrick_group"] == "III-IV"
    assert first["source_detail"] == "benign dermal"
    assert pd.isna(first["group_id"])
    assert data.frame["label"].isna().all()


def test_malignant_comes_from_the_three_partition_label(data):
    assert data.frame["malignant"].tolist() == [False, True, False, False]


def test_minus_one_is_unknown_not_an_error(data, pick):
    unknown = pick(data.frame, "c94ce27e389f96bda998e7c3fa5c4a2e")
    assert pd.isna(unknown["fitzpatrick"])
    assert pd.isna(unknown["fitzpatrick_group"])
    assert "fitzpatrick17k:c94ce27e389f96bda998e7c3fa5c4a2e" not in set(
        data.quarantine["sample_id"].dropna()
    )


def test_wrongly_labelled_rows_are_dropped_and_counted(data):
    assert data.dropped == {"qc_wrongly_labelled": 1}
    assert "7c3a2a3b0e5e3c1a6f1b2d4e8f9a0b1c" not in set(data.frame["image_id"])
    assert "fitzpatrick17k:7c3a2a3b0e5e3c1a6f1b2d4e8f9a0b1c" not in set(
        data.quarantine["sample_id"].dropna()
    )


def test_wrongly_labelled_rows_can_be_kept(fixtures_root):
    data = read_source(
        "fitzpatrick17k", fixtures_root, {"drop_wrongly_labelled": False}
    )
    assert data.dropped == {}
    assert "7c3a2a3b0e5e3c1a6f1b2d4e8f9a0b1c" in set(data.frame["image_id"])


@pytest.mark.parametrize(
    "qc", ["3 Wrongly labelled", "3 WRONGLY LABELLED", "wrongly labeled"]
)
def test_wrongly_labelled_matches_any_case_and_spelling(data_root, write_file, qc):
    write_file(
        "fitzpatrick17k/fitzpatrick17k.csv",
        HEADER + f"aaa,2,2,acne,inflammatory,non-neoplastic,{qc},u,u\n"
        "bbb,2,2,acne,inflammatory,non-neoplastic,2 Characteristic,u,u\n",
    )
    data = read_source("fitzpatrick17k", data_root)
    assert data.frame["image_id"].tolist() == ["bbb"]
    assert data.dropped == {"qc_wrongly_labelled": 1}


def test_bad_rows_are_quarantined_with_reason_and_line(data):
    q = data.quarantine
    assert q[["line", "reason"]].values.tolist() == [
        [6, "missing_label"],
        [7, "invalid_value"],
        [8, "malformed_row"],
        [9, "missing_image_id"],
    ]
    assert (q["dataset"] == "fitzpatrick17k").all()
    assert (q["source_file"] == "fitzpatrick17k/fitzpatrick17k.csv").all()


def test_invalid_fitzpatrick_names_the_column_and_value(data, reasons):
    invalid = reasons(data.quarantine, "invalid_value")
    assert invalid["sample_id"].tolist() == [
        "fitzpatrick17k:1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a"
    ]
    assert "fitzpatrick_scale" in invalid["detail"][0]
    assert "'7'" in invalid["detail"][0]


@pytest.mark.parametrize("value", ["0", "7", "three", "2.5"])
def test_fitzpatrick_outside_the_scale_is_invalid(data_root, write_file, value):
    write_file(
        "fitzpatrick17k/fitzpatrick17k.csv",
        HEADER + f"aaa,{value},2,acne,inflammatory,non-neoplastic,,u,u\n",
    )
    data = read_source("fitzpatrick17k", data_root)
    assert data.frame.empty
    assert data.quarantine["reason"].tolist() == ["invalid_value"]


def test_image_suffix_and_folder_options(data_root, copy_fixture):
    copy_fixture("fitzpatrick17k", "f17k")
    data = read_source(
        "fitzpatrick17k", data_root, {"dir": "f17k", "image_suffix": ".png"}
    )
    assert data.frame["image_path"][0] == (
        "f17k/images/fd06d13de341cc75ad679916c5d7e6a6.png"
    )
    assert data.files == [data_root / "f17k" / "fitzpatrick17k.csv"]
