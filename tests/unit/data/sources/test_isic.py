"""ISIC reader: tests/data/sources/isic/metadata.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from mlkit.data.sources import read_source


@pytest.fixture
def data(fixtures_root):
    return read_source("isic", fixtures_root)


def test_only_clinical_and_tbp_close_up_images_are_kept(data):
    assert data.frame["image_id"].tolist() == [
        "ISIC_0000001",
        "ISIC_0000003",
        "ISIC_0000007",
        "ISIC_0000008",
    ]
    assert data.frame["source_detail"].tolist() == [
        "clinical: close-up",
        "TBP tile: close-up",
        "clinical: close-up",
        "clinical: overview",
    ]


def test_dropped_image_types_are_counted_by_kind(data):
    assert data.dropped == {"dermoscopic_image": 1, "other_image_type": 1}
    assert "isic:ISIC_0000002" not in set(data.quarantine["sample_id"].dropna())


def test_kept_image_types_are_an_option(fixtures_root):
    data = read_source(
        "isic",
        fixtures_root,
        {"keep_image_types": ["dermoscopic", "TBP tile: overview"]},
    )
    assert set(data.frame["image_id"]) == {"ISIC_0000002", "ISIC_0000004"}
    assert data.dropped == {"other_image_type": 6}


def test_label_is_the_last_filled_diagnosis_level(data, pick):
    assert pick(data.frame, "ISIC_0000001")["raw_label"] == "Melanoma Invasive"
    assert pick(data.frame, "ISIC_0000003")["raw_label"] == "Nevus"
    # A quoted field with a comma in it, at level 4.
    assert (
        pick(data.frame, "ISIC_0000007")["raw_label"] == "Basal cell carcinoma, Nodular"
    )


def test_group_is_the_patient_else_the_lesion(data):
    assert data.frame["group_id"].astype(object).tolist() == [
        "IP_1000001",
        "IL_0000102",
        "IP_1000005",
        pd.NA,
    ]


def test_patient_fields_and_text(data, pick):
    first = pick(data.frame, "ISIC_0000001")
    assert first["text"] == "Patient: male, about 55 years old. Site: posterior torso."
    assert first["sex"] == "male"
    assert first["age"] == 55
    assert first["body_site"] == "posterior torso"
    no_sex_no_site = pick(data.frame, "ISIC_0000007")
    assert no_sex_no_site["text"] == "Patient: about 65 years old."
    decimal_age = pick(data.frame, "ISIC_0000008")
    assert decimal_age["text"] == (
        "Patient: male, about 35 years old. Site: anterior torso."
    )


def test_malignant_comes_from_the_first_diagnosis_level(data):
    assert data.frame["malignant"].tolist() == [True, False, True, False]


def test_bad_rows_are_quarantined(data):
    q = data.quarantine
    assert q[["line", "reason", "sample_id"]].values.tolist() == [
        [6, "invalid_value", "isic:ISIC_0000005"],
        [7, "missing_label", "isic:ISIC_0000006"],
    ]
    assert "age_approx" in q["detail"][0] and "'unknown'" in q["detail"][0]


def test_empty_isic_id_is_quarantined(data_root, write_file):
    write_file(
        "isic/metadata.csv",
        "isic_id,diagnosis_1,diagnosis_2,image_type\n"
        ",Benign,Nevus,clinical: close-up\n"
        "ISIC_1,Benign,Nevus,clinical: close-up\n",
    )
    data = read_source("isic", data_root)
    assert data.frame["image_id"].tolist() == ["ISIC_1"]
    assert data.quarantine[["line", "reason"]].values.tolist() == [
        [2, "missing_image_id"]
    ]
    # Columns the file lacks are simply unknown.
    assert data.frame["text"][0] == ""
    assert pd.isna(data.frame["group_id"][0])


def test_fitzpatrick_skin_type_is_read_when_present(data_root, write_file):
    write_file(
        "isic/metadata.csv",
        "isic_id,diagnosis_1,diagnosis_2,image_type,fitzpatrick_skin_type\n"
        "ISIC_1,Benign,Nevus,clinical: close-up,III\n"
        "ISIC_2,Benign,Nevus,clinical: close-up, vi\n"
        "ISIC_3,Benign,Nevus,clinical: close-up,\n"
        "ISIC_4,Benign,Nevus,clinical: close-up,VII\n",
    )
    data = read_source("isic", data_root)
    assert data.frame["fitzpatrick"].tolist()[:2] == [3, 6]
    assert pd.isna(data.frame["fitzpatrick"][2])
    assert data.frame["fitzpatrick_group"].tolist()[:2] == ["III-IV", "V-VI"]
    assert data.quarantine[["line", "reason"]].values.tolist() == [[5, "invalid_value"]]
    assert "fitzpatrick_skin_type" in data.quarantine["detail"][0]
