"""apply_skincap: tests/data/sources/skincap/skincap.csv on the other fixtures."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlkit.data import schema
from mlkit.data.sources import apply_skincap, read_source
from mlkit.errors import DataError


@pytest.fixture
def frame(fixtures_root):
    names = ("fitzpatrick17k", "ddi", "isic")
    parts = [read_source(name, fixtures_root).frame for name in names]
    return pd.concat(parts, ignore_index=True)


def test_captions_are_added_to_matching_rows(fixtures_root, frame, pick):
    out, counts = apply_skincap(frame, fixtures_root)
    assert counts == {
        "matched": 4,
        "appended": 4,
        "already_present": 0,
        "unmatched_captions": 1,
    }
    assert pick(out, "fd06d13de341cc75ad679916c5d7e6a6")["text"] == (
        "The image shows multiple firm nodules with excoriated surfaces on the "
        "extensor arm."
    )
    # SkinCap's "fitz17k" spelling; a caption without a final "." gets one.
    assert pick(out, "a4bb4e5206c4e89a303f470576fc5253")["text"] == (
        "The image shows a scar-like, whitish plaque with ill-defined borders."
    )
    assert pick(out, "000003.png")["text"] == (
        "The image shows a stuck-on brown plaque with a waxy surface."
    )
    assert pick(out, "000002.png")["text"] == ""


def test_other_datasets_and_the_input_are_untouched(fixtures_root, frame):
    before = frame.copy()
    out, _ = apply_skincap(frame, fixtures_root)
    pd.testing.assert_frame_equal(frame, before)
    isic = out["dataset"] == "isic"
    pd.testing.assert_series_equal(out.loc[isic, "text"], frame.loc[isic, "text"])
    assert list(out.columns) == list(schema.COLUMNS)


def test_existing_text_is_kept_and_the_caption_follows(fixtures_root, frame, pick):
    frame.loc[frame["image_id"] == "000001.png", "text"] = "Given."
    out, _ = apply_skincap(frame, fixtures_root)
    assert pick(out, "000001.png")["text"] == (
        "Given. The image shows an irregular pigmented patch with variegated brown "
        "color."
    )


def test_applying_twice_is_applying_once(fixtures_root, frame):
    once, _ = apply_skincap(frame, fixtures_root)
    twice, counts = apply_skincap(once, fixtures_root)
    pd.testing.assert_frame_equal(once, twice)
    assert counts["appended"] == 0
    assert counts["already_present"] == 4


def test_the_same_image_twice_in_skincap_is_an_error(data_root, write_file, frame):
    write_file(
        "skincap/skincap.csv",
        "id,ori_file_path,caption_zh_polish_en,source\n"
        "1,000001.png,One.,ddi\n2,000001.png,Two.,ddi\n",
    )
    with pytest.raises(DataError, match="ori_file_path"):
        apply_skincap(frame, data_root)


def test_captions_of_unknown_sources_count_as_unmatched(data_root, write_file, frame):
    write_file(
        "skincap/skincap.csv",
        "id,ori_file_path,caption_zh_polish_en,source\n"
        "1,000001.png,One.,ddi\n2,000002.png,Two.,pad-ufes-20\n",
    )
    out, counts = apply_skincap(frame, data_root)
    assert counts == {
        "matched": 1,
        "appended": 1,
        "already_present": 0,
        "unmatched_captions": 1,
    }
    assert out.loc[out["image_id"] == "000002.png", "text"].tolist() == [""]


def test_a_frame_without_the_needed_columns_is_an_error(fixtures_root):
    with pytest.raises(DataError, match="image_path"):
        apply_skincap(pd.DataFrame({"dataset": ["ddi"], "text": [""]}), fixtures_root)


_words = st.text(alphabet="abcdefgh ,.", min_size=0, max_size=30)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["ddi", "fitzpatrick17k", "isic"]), _words, _words),
        min_size=1,
        max_size=8,
    ),
    with_caption=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_idempotence_property(rows, with_caption):
    frame = pd.DataFrame(
        {
            "sample_id": [f"{d}:{i}.png" for i, (d, _, _) in enumerate(rows)],
            "dataset": [d for d, _, _ in rows],
            "image_id": [f"{i}.png" for i in range(len(rows))],
            "image_path": [f"{d}/images/{i}.png" for i, (d, _, _) in enumerate(rows)],
            "raw_label": "acne",
            "text": [text for _, text, _ in rows],
        }
    )
    frame = schema.conform(frame)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "skincap" / "skincap.csv"
        path.parent.mkdir()
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "ori_file_path", "caption_zh_polish_en", "source"])
            # A caption for an image that is not in the frame keeps the file
            # from being header-only.
            writer.writerow([99, "unknown.png", "Elsewhere.", "ddi"])
            for i, (dataset, _, caption) in enumerate(rows):
                if with_caption[i]:
                    writer.writerow([i, f"{i}.png", caption, dataset])
        once, _ = apply_skincap(frame, tmp)
        twice, counts = apply_skincap(once, tmp)
    pd.testing.assert_frame_equal(once, twice)
    assert counts["appended"] == 0
