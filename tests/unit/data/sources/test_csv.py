"""Shared CSV reading (mlkit.data.sources._csv), through the public readers."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from mlkit.data.sources import read_source
from mlkit.data.sources._csv import read_csv
from mlkit.errors import DataError

DDI_HEADER = "DDI_file,skin_tone,malignant,disease\n"
DDI_CSV = "ddi/ddi_metadata.csv"


def test_missing_file_names_the_path_and_the_options(data_root):
    with pytest.raises(DataError) as caught:
        read_source("ddi", data_root)
    message = str(caught.value)
    assert str(data_root / "ddi" / "ddi_metadata.csv") in message
    assert "not found" in message
    assert "`dir`" in message and "`csv`" in message


def test_empty_file_is_an_error(data_root, write_file):
    write_file(DDI_CSV, "")
    with pytest.raises(DataError, match="ddi_metadata.csv: file is empty"):
        read_source("ddi", data_root)


def test_header_only_file_has_no_rows(data_root, write_file):
    write_file(DDI_CSV, DDI_HEADER)
    with pytest.raises(DataError, match="no rows"):
        read_source("ddi", data_root)


def test_wrong_encoding_names_the_file_and_the_encoding_option(data_root, write_file):
    write_file(
        DDI_CSV,
        (DDI_HEADER + "000001.png,12,False,café-au-lait macule\n").encode("latin-1"),
    )
    with pytest.raises(DataError) as caught:
        read_source("ddi", data_root)
    message = str(caught.value)
    assert "ddi_metadata.csv" in message
    assert "utf-8" in message
    assert "`encoding` option of source 'ddi'" in message


def test_other_encodings_can_be_read(data_root, write_file):
    write_file(
        DDI_CSV,
        (DDI_HEADER + "000001.png,12,False,café-au-lait macule\n").encode("latin-1"),
    )
    data = read_source("ddi", data_root, {"encoding": "latin-1"})
    assert data.frame["raw_label"].tolist() == ["café-au-lait macule"]


def test_a_late_bad_byte_is_an_encoding_error_too(data_root, write_file):
    good = "".join(f"{i:06d}.png,12,False,acne\n" for i in range(5000))
    write_file(
        DDI_CSV, DDI_HEADER.encode() + good.encode() + b"999999.png,12,False,caf\xe9\n"
    )
    with pytest.raises(DataError, match="`encoding` option"):
        read_source("ddi", data_root)


def test_missing_columns_are_named_with_what_was_found(data_root, write_file):
    write_file(DDI_CSV, "DDI_file,skin_tone,diagnosis\n000001.png,12,acne\n")
    with pytest.raises(DataError) as caught:
        read_source("ddi", data_root)
    message = str(caught.value)
    assert "'malignant', 'disease'" in message
    assert "'DDI_file', 'skin_tone', 'diagnosis'" in message


def test_duplicate_ids_show_the_column_and_at_most_five(data_root, write_file):
    rows = "".join(f"{i:06d}.png,12,False,acne\n" for i in range(7)) * 2
    write_file(DDI_CSV, DDI_HEADER + rows)
    with pytest.raises(DataError) as caught:
        read_source("ddi", data_root)
    message = str(caught.value)
    assert "column 'DDI_file'" in message
    assert "7 value(s) occur more than once" in message
    assert "'000004.png'" in message
    assert "'000005.png'" not in message


def test_repeated_column_names_are_an_error(data_root, write_file):
    write_file(
        DDI_CSV, "DDI_file,skin_tone,malignant,disease,disease\na,12,False,b,c\n"
    )
    with pytest.raises(DataError, match="repeated.*'disease'"):
        read_source("ddi", data_root)


def test_malformed_rows_are_quarantined_and_later_lines_stay_right(
    data_root, write_file
):
    write_file(
        DDI_CSV,
        DDI_HEADER
        + "000001.png,12,False,acne\n"  # line 2
        + "000002.png,12,False,acne,extra\n"  # line 3: one field too many
        + "000003.png,34\n"  # line 4: too few
        + "000004.png,99,False,acne\n",  # line 5: invalid skin tone
    )
    data = read_source("ddi", data_root)
    assert data.frame["image_id"].tolist() == ["000001.png"]
    assert data.quarantine[["line", "reason"]].values.tolist() == [
        [3, "malformed_row"],
        [4, "malformed_row"],
        [5, "invalid_value"],
    ]
    assert "expected 4 fields, got 2" in data.quarantine["detail"][1]


def test_only_malformed_rows_is_not_an_error(data_root, write_file):
    write_file(DDI_CSV, DDI_HEADER + "000001.png,12\n")
    data = read_source("ddi", data_root)
    assert data.frame.empty
    assert data.quarantine["reason"].tolist() == ["malformed_row"]


def test_values_stay_text_trimmed_with_empty_as_null(data_root, write_file):
    path = write_file(
        "x/x.csv",
        '\ufeffid, name ,code\n 007 , NA ,\n008,"  quoted  "," "\n',
    )
    rows = read_csv(path, dataset="x", source_file="x/x.csv", required=["id", "name"])
    frame = rows.frame
    assert list(frame.columns) == ["id", "name", "code"]  # BOM and spaces gone
    assert frame["id"].tolist() == ["007", "008"]  # no number guessing
    assert frame["name"].tolist() == ["NA", "quoted"]  # "NA" is a value
    assert frame["code"].isna().all()
    assert isinstance(frame["id"].dtype, pd.StringDtype)
    assert rows.lines.tolist() == [2, 3]


def test_compressed_files_are_read(data_root, fixtures_root, write_file):
    plain = (fixtures_root / "ddi" / "ddi_metadata.csv").read_bytes()
    write_file("ddi/ddi_metadata.csv.gz", gzip.compress(plain))
    data = read_source("ddi", data_root, {"csv": "ddi_metadata.csv.gz"})
    expected = read_source("ddi", fixtures_root)
    pd.testing.assert_frame_equal(data.frame, expected.frame)
