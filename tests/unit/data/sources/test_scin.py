"""SCIN reader: tests/data/sources/scin/scin_cases.csv and scin_labels.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from mlkit.data.sources import read_source
from mlkit.errors import DataError

CASES_HEADER = "case_id,age_group,sex_at_birth,fitzpatrick_skin_type,image_1_path\n"
LABELS_HEADER = (
    "case_id,dermatologist_skin_condition_on_label_name,weighted_skin_condition_label\n"
)
FIRST_CASE = "-1000600354148496558"


@pytest.fixture
def data(fixtures_root):
    return read_source("scin", fixtures_root)


def _image(number: str) -> str:
    return f"dataset/images/{number}.png"


def test_one_row_per_image_in_case_order(data):
    assert data.frame["image_id"].tolist() == [
        _image("-3205742176803893704"),
        _image("-1106297000213046567"),
        _image("-4690437271932040536"),
        _image("-1389277610337112450"),
        _image("-9017451163828430006"),
    ]
    assert data.frame["group_id"].tolist()[:3] == [
        FIRST_CASE,
        FIRST_CASE,
        "-1002039107727665188",
    ]
    assert data.files[0].name == "scin_cases.csv"
    assert data.files[1].name == "scin_labels.csv"


def test_paths_and_ids(data, pick):
    first = pick(data.frame, _image("-3205742176803893704"))
    assert first["sample_id"] == "scin:dataset/images/-3205742176803893704.png"
    assert first["image_path"] == "scin/dataset/images/-3205742176803893704.png"


def test_label_is_the_highest_weighted_condition(data):
    assert data.frame["raw_label"].tolist() == [
        "Eczema",
        "Eczema",
        # Ties go to the condition the dermatologists listed first, not the
        # first key of the weights.
        "Tinea",
        "Urticaria",
        "Psoriasis",
    ]


def test_fitzpatrick_type_is_read_from_fst(data):
    assert data.frame["fitzpatrick"].astype(object).tolist() == [
        3,
        3,
        pd.NA,  # empty
        6,
        pd.NA,  # NONE_SELECTED
    ]
    assert data.frame["fitzpatrick_group"].tolist()[:2] == ["III-IV", "III-IV"]


def test_text_describes_the_case(data, pick):
    assert pick(data.frame, _image("-3205742176803893704"))["text"] == (
        "Patient: female, 30 to 39 years old. "
        "Texture: raised or bumpy, rough or flaky. Site: arm, leg. "
        "Symptoms: itching, burning. Duration: one to four weeks."
    )
    assert pick(data.frame, _image("-1389277610337112450"))["text"] == (
        "Patient: other or unspecified, 80 years old or above. Texture: flat. "
        "Site: head or neck. Symptoms: increasing size, darkening."
    )
    # "No relevant experience" is not a symptom worth a sentence.
    assert "Symptoms" not in pick(data.frame, _image("-4690437271932040536"))["text"]
    # Only unknown answers: no text.
    assert pick(data.frame, _image("-9017451163828430006"))["text"] == ""


def test_sex_and_body_site(data, pick):
    first = pick(data.frame, _image("-3205742176803893704"))
    assert first["sex"] == "female"
    assert first["body_site"] == "arm, leg"


def test_bad_cases_are_quarantined(data):
    q = data.quarantine
    assert q[["source_file", "line", "reason", "sample_id"]].astype(
        object
    ).values.tolist() == [
        [
            "scin/scin_cases.csv",
            4,
            "missing_label",
            f"scin:{_image('-5019271634532127219')}",
        ],
        [
            "scin/scin_cases.csv",
            4,
            "missing_label",
            f"scin:{_image('-8227351920344816002')}",
        ],
        [
            "scin/scin_cases.csv",
            7,
            "invalid_value",
            f"scin:{_image('-7781040023445592011')}",
        ],
        ["scin/scin_cases.csv", 8, "missing_image_id", pd.NA],
        [
            "scin/scin_labels.csv",
            4,
            "missing_label",
            f"scin:{_image('-2366130153092003345')}",
        ],
        [
            "scin/scin_labels.csv",
            5,
            "invalid_value",
            f"scin:{_image('-6420924587226396516')}",
        ],
    ]
    details = dict(
        zip(q["line"].astype(str) + q["source_file"], q["detail"], strict=True)
    )
    assert "fitzpatrick_skin_type" in details["7scin/scin_cases.csv"]
    assert "'FST9'" in details["7scin/scin_cases.csv"]
    assert "weighted_skin_condition_label" in details["5scin/scin_labels.csv"]


def _write(write_file, cases: str, labels: str) -> None:
    write_file("scin/scin_cases.csv", CASES_HEADER + cases)
    write_file("scin/scin_labels.csv", LABELS_HEADER + labels)


def test_labels_are_parsed_as_literals_never_run(data_root, write_file):
    marker = data_root / "ran"
    _write(
        write_file,
        "c1,AGE_18_TO_29,MALE,FST2,dataset/images/1.png\n",
        f"c1,\"['Acne']\",\"__import__('pathlib').Path('{marker}').touch()\"\n",
    )
    data = read_source("scin", data_root)
    assert not marker.exists()
    assert data.frame.empty
    assert data.quarantine["reason"].tolist() == ["invalid_value"]


@pytest.mark.parametrize(
    "weights",
    ["['Acne', 'Eczema']", "{'Acne': 'high'}", "{1: 0.5}", "{'Acne': True}"],
)
def test_labels_that_are_not_a_weight_dict_are_invalid(data_root, write_file, weights):
    _write(
        write_file,
        "c1,AGE_18_TO_29,MALE,FST2,dataset/images/1.png\n",
        f'c1,"[\'Acne\']","{weights}"\n',
    )
    data = read_source("scin", data_root)
    assert data.quarantine["reason"].tolist() == ["invalid_value"]


def test_tie_without_a_usable_order_takes_the_first_key(data_root, write_file):
    _write(
        write_file,
        "c1,AGE_18_TO_29,MALE,FST2,dataset/images/1.png\n",
        "c1,,\"{'Psoriasis': 0.5, 'Acne': 0.5}\"\n",
    )
    data = read_source("scin", data_root)
    assert data.frame["raw_label"].tolist() == ["Psoriasis"]


def test_an_image_in_two_cases_is_an_error(data_root, write_file):
    _write(
        write_file,
        "c1,,,,dataset/images/1.png\nc2,,,,dataset/images/1.png\n",
        "c1,,\"{'Acne': 1.0}\"\nc2,,\"{'Acne': 1.0}\"\n",
    )
    with pytest.raises(DataError, match="image_N_path.*dataset/images/1.png"):
        read_source("scin", data_root)


def test_a_case_twice_in_the_labels_is_an_error(data_root, write_file):
    _write(
        write_file,
        "c1,,,,dataset/images/1.png\n",
        "c1,,\"{'Acne': 1.0}\"\nc1,,\"{'Eczema': 1.0}\"\n",
    )
    with pytest.raises(DataError, match=r"scin_labels.csv.*'case_id'.*'c1'"):
        read_source("scin", data_root)


def test_missing_labels_file_is_an_error_naming_the_option(data_root, write_file):
    write_file("scin/scin_cases.csv", CASES_HEADER + "c1,,,,dataset/images/1.png\n")
    with pytest.raises(DataError, match="labels_csv"):
        read_source("scin", data_root)
