import json

import pandas as pd
import pytest

from mlkit.data.manifest import (
    CARD_NAME,
    MANIFEST_NAME,
    build_card,
    read_card,
    read_manifest,
    write_manifest,
)
from mlkit.data.schema import COLUMNS
from mlkit.errors import DataError


@pytest.fixture
def manifest():
    return pd.DataFrame(
        {
            "sample_id": ["a:1", "a:2", "b:1", "b:2"],
            "dataset": ["a", "a", "b", "b"],
            "image_id": ["1", "2", "1", "2"],
            "image_path": ["a/1.jpg", "a/2.jpg", "b/1.png", "b/2.png"],
            "raw_label": ["Acne", "acne", "Tinea", "tinea"],
            "label": ["acne", "acne", "tinea", "tinea"],
            "text": ["Itchy.", "", "Ring.", "Red."],
            "fitzpatrick": [1, None, 5, 6],
            "fitzpatrick_group": ["I-II", None, "V-VI", "V-VI"],
            "split": ["train", "test", "train", "val"],
        }
    )


def test_round_trip_and_card(tmp_path, manifest):
    quarantine = pd.DataFrame({"dataset": ["a"], "reason": ["missing_image"]})
    paths, card = write_manifest(
        manifest,
        tmp_path,
        parameters={"seed": 3},
        quarantine=quarantine,
        synthetic=True,
    )
    assert paths.manifest.name == MANIFEST_NAME and paths.card.name == CARD_NAME
    back = read_manifest(tmp_path)
    assert list(back.columns) == list(COLUMNS)
    assert back["sample_id"].tolist() == manifest["sample_id"].tolist()
    assert back["fitzpatrick"].isna().tolist() == [False, True, False, False]
    assert read_card(paths.card) == json.loads(paths.card.read_text())
    assert card["rows"] == 4 and card["synthetic"] is True
    assert card["labels"] == ["acne", "tinea"]
    assert card["counts"]["dataset_split"] == {
        "a": {"test": 1, "train": 1},
        "b": {"train": 1, "val": 1},
    }
    assert card["counts"]["fitzpatrick_group_split"]["unknown"] == {"test": 1}
    assert card["parameters"] == {"seed": 3}
    assert pd.read_csv(paths.quarantine)["reason"].tolist() == ["missing_image"]


def test_same_input_gives_same_manifest_bytes(tmp_path, manifest):
    _, one = write_manifest(manifest, tmp_path / "one", parameters={})
    _, two = write_manifest(manifest, tmp_path / "two", parameters={})
    assert one["manifest"]["sha256"] == two["manifest"]["sha256"]


def test_tampered_manifest_is_refused(tmp_path, manifest):
    paths, _ = write_manifest(manifest, tmp_path, parameters={})
    write_manifest(manifest.iloc[:2], tmp_path / "other", parameters={})
    paths.manifest.write_bytes((tmp_path / "other" / MANIFEST_NAME).read_bytes())
    with pytest.raises(DataError, match="does not match its dataset card"):
        read_manifest(paths.manifest)
    assert len(read_manifest(paths.manifest, verify=False)) == 2


def test_missing_and_broken_files(tmp_path, manifest):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="dataset card not found"):
        read_card(tmp_path / CARD_NAME)
    (tmp_path / CARD_NAME).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_card(tmp_path / CARD_NAME)
    (tmp_path / MANIFEST_NAME).write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        read_manifest(tmp_path, verify=False)


def test_manifest_without_split_column_is_refused(tmp_path, manifest):
    manifest.drop(columns=["split", "label"]).to_parquet(tmp_path / MANIFEST_NAME)
    with pytest.raises(DataError, match="missing label, split"):
        read_manifest(tmp_path, verify=False)


def test_failed_write_leaves_previous_manifest(tmp_path, manifest):
    paths, _ = write_manifest(manifest, tmp_path, parameters={})
    before = paths.manifest.read_bytes()
    broken = manifest.drop(columns=["sample_id"])
    with pytest.raises(DataError):
        write_manifest(broken, tmp_path, parameters={})
    assert paths.manifest.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_build_card_of_empty_manifest(manifest):
    card = build_card(manifest.iloc[:0], manifest_sha256="0", parameters={})
    assert card["rows"] == 0 and card["counts"]["label"] == {}
