from __future__ import annotations

import json

import numpy as np
import pytest

from mlkit.errors import ConfigError, DataError
from mlkit.evaluate.metrics import expected_calibration_error, macro_f1
from mlkit.evaluate.report import (
    REPORT_KEYS,
    evaluation_report,
    read_report,
    write_report,
)

LABELS = ["acne", "eczema", "psoriasis"]
MODEL_SHA = "a" * 64
MANIFEST_SHA = "b" * 64


def sample(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y_true] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fitz = rng.choice(np.array(["I-II", "III-IV", None], dtype=object), n)
    dataset = rng.choice(["isic", "scin"], n)
    return y_true, probs, fitz, dataset


def build(**overrides):
    y_true, probs, fitz, dataset = sample()
    kwargs = {
        "model_sha256": MODEL_SHA,
        "manifest_sha256": MANIFEST_SHA,
        "synthetic": True,
        "fitzpatrick_group": fitz,
        "dataset": dataset,
        "abstention": {"confidence": 0.5},
        "ablations": {"text_only": np.full_like(probs, 1 / 3)},
    } | overrides
    return evaluation_report(y_true, probs, LABELS, **kwargs), (y_true, probs)


def test_report_numbers_come_from_the_inputs():
    report, (y_true, probs) = build()
    pred = probs.argmax(axis=1)
    assert set(REPORT_KEYS) <= set(report)
    assert report["synthetic"] is True
    assert report["model_sha256"] == MODEL_SHA
    assert report["manifest_sha256"] == MANIFEST_SHA
    assert report["metrics"]["n"] == 60
    assert report["metrics"]["macro_f1"] == macro_f1(y_true, pred, [0, 1, 2])
    assert report["metrics"]["accuracy"] == pytest.approx(np.mean(pred == y_true))
    assert report["metrics"]["ece"] == expected_calibration_error(probs, y_true)
    assert [row["label"] for row in report["per_class"]] == LABELS
    assert sum(row["support"] for row in report["per_class"]) == 60
    matrix = np.array(report["confusion"]["matrix"])
    assert matrix.sum() == 60
    assert np.trace(matrix) == int((pred == y_true).sum())
    assert len(report["calibration"]["reliability"]) == 15


def test_report_groups_abstention_and_ablations():
    report, (y_true, probs) = build()
    fitz = report["groups"]["fitzpatrick_group"]
    assert [row["group"] for row in fitz] == ["I-II", "III-IV", "V-VI", "unknown"]
    assert sum(row["n"] for row in fitz) == 60
    v_vi = fitz[2]
    assert v_vi["n"] == 0 and v_vi["macro_f1"] is None  # NaN is written as null
    assert [row["group"] for row in report["groups"]["dataset"]] == ["isic", "scin"]

    confident = probs.max(axis=1) >= 0.5
    assert report["abstention"]["abstained"] == int((~confident).sum())
    assert report["abstention"]["accuracy_answered"] == pytest.approx(
        np.mean(probs.argmax(axis=1)[confident] == y_true[confident])
    )
    # Uniform probabilities predict class 0 for every sample.
    text_only = report["ablations"]["text_only"]
    assert text_only["accuracy"] == pytest.approx(np.mean(y_true == 0))


def test_report_is_plain_json_and_deterministic():
    first, _ = build()
    second, _ = build()
    text = json.dumps(first, allow_nan=False, sort_keys=True)
    assert text == json.dumps(second, allow_nan=False, sort_keys=True)
    assert json.loads(text) == first


def test_class_names_and_indices_give_the_same_report():
    y_true, probs, _, _ = sample()
    names = np.array(LABELS, dtype=object)[y_true]
    by_index = evaluation_report(
        y_true,
        probs,
        LABELS,
        model_sha256=MODEL_SHA,
        manifest_sha256=MANIFEST_SHA,
        synthetic=False,
    )
    by_name = evaluation_report(
        names,
        probs,
        LABELS,
        model_sha256=MODEL_SHA,
        manifest_sha256=MANIFEST_SHA,
        synthetic=False,
    )
    assert by_index == by_name
    assert by_index["synthetic"] is False
    assert "abstention" not in by_index and by_index["groups"] == {}


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"synthetic": "yes"}, ConfigError, "synthetic"),
        ({"model_sha256": "abc"}, DataError, "model_sha256"),
        ({"manifest_sha256": "B" * 64}, DataError, "manifest_sha256"),
        ({"ablations": {"image_only": np.full((2, 3), 1 / 3)}}, DataError, "shape"),
        ({"abstention": {"confidence": 3}}, ConfigError, "confidence"),
    ],
)
def test_bad_report_arguments(overrides, error, message):
    with pytest.raises(error, match=message):
        build(**overrides)


def test_inconsistent_arrays_are_rejected():
    y_true, probs, _, _ = sample()
    common = {
        "model_sha256": MODEL_SHA,
        "manifest_sha256": MANIFEST_SHA,
        "synthetic": True,
    }
    with pytest.raises(DataError, match="columns than labels"):
        evaluation_report(y_true, probs, LABELS[:2], **common)
    with pytest.raises(DataError, match="not in labels"):
        evaluation_report(["melanoma"] * 60, probs, LABELS, **common)
    with pytest.raises(DataError, match="differ in length"):
        evaluation_report(y_true[:10], probs, LABELS, **common)
    with pytest.raises(DataError, match="unique"):
        evaluation_report(y_true, probs, ["a", "a", "b"], **common)


def test_write_and_read_report(tmp_path):
    report, _ = build()
    path = write_report(tmp_path / "eval" / "report.json", report)
    assert read_report(path) == report
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_write_report_refuses_non_json_values(tmp_path):
    report, _ = build()
    report["metrics"]["macro_f1"] = float("nan")
    with pytest.raises(DataError, match="not plain JSON"):
        write_report(tmp_path / "report.json", report)
    assert not (tmp_path / "report.json").exists()


def test_read_report_names_missing_keys(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(DataError, match="missing report_version"):
        read_report(path)
    with pytest.raises(DataError, match="not found"):
        read_report(tmp_path / "absent.json")
