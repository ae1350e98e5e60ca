from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from mlkit.errors import ConfigError, DataError, MlkitError
from mlkit.evaluate.gate import (
    GATE_KEYS,
    GateFailed,
    GateResult,
    check_gate,
    read_gate,
    write_gate,
)


def report(macro_f1: float = 0.62) -> dict:
    return {
        "report_version": 1,
        "synthetic": True,
        "model_sha256": "a" * 64,
        "manifest_sha256": "b" * 64,
        "split": "test",
        "labels": ["acne", "eczema"],
        "metrics": {"macro_f1": macro_f1, "accuracy": 0.7, "ece": 0.05, "n": 40},
    }


def test_check_gate_passes_only_strictly_above():
    assert check_gate(report(0.62), 0.5) == GateResult(True, 0.62, 0.5)
    assert check_gate(report(0.5), 0.5) == GateResult(False, 0.5, 0.5)
    assert not check_gate(report(0.41), 0.5).passed
    assert check_gate(report(0.01), 0).passed


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_threshold_is_validated(threshold):
    with pytest.raises(ConfigError, match="gate threshold"):
        check_gate(report(), threshold)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"metrics": {}},
        {"metrics": {"macro_f1": None}},
        {"metrics": {"macro_f1": float("nan")}},
    ],
)
def test_report_without_macro_f1_is_a_data_error(bad):
    with pytest.raises(DataError, match="metrics.macro_f1"):
        check_gate(bad, 0.5)


def test_write_gate_records_the_pass(tmp_path):
    before = datetime.now(UTC).replace(microsecond=0)
    path = write_gate(tmp_path / "gate.json", report(0.62), 0.5)
    gate = json.loads(path.read_text())
    assert set(gate) == set(GATE_KEYS)
    assert gate["passed"] is True
    assert gate["measured"] == 0.62 and gate["threshold"] == 0.5
    assert gate["model_sha256"] == "a" * 64
    assert gate["dataset_sha256"] == "b" * 64
    assert gate["metrics"]["accuracy"] == 0.7
    assert gate["synthetic"] is True
    created = datetime.fromisoformat(gate["created_at"])
    assert created.utcoffset().total_seconds() == 0
    assert before <= created <= datetime.now(UTC)
    assert read_gate(path) == gate


def test_failing_gate_raises_with_both_numbers_and_writes_nothing(tmp_path):
    path = tmp_path / "gate.json"
    with pytest.raises(GateFailed) as info:
        write_gate(path, report(0.412), 0.5)
    assert str(info.value) == "macro-F1 0.412 is not above the gate threshold 0.500"
    assert isinstance(info.value, MlkitError)
    assert (info.value.measured, info.value.threshold) == (0.412, 0.5)
    assert not path.exists()


def test_equal_score_fails_and_close_numbers_are_shown_apart(tmp_path):
    with pytest.raises(GateFailed, match="0.500 is not above .* 0.500$"):
        write_gate(tmp_path / "gate.json", report(0.5), 0.5)
    with pytest.raises(GateFailed, match="0.4996 is not above .* 0.4999$"):
        write_gate(tmp_path / "gate.json", report(0.4996), 0.4999)


def test_failing_gate_removes_a_stale_pass(tmp_path):
    path = write_gate(tmp_path / "gate.json", report(0.9), 0.5)
    with pytest.raises(GateFailed):
        write_gate(path, report(0.3), 0.5)
    assert not path.exists()


def test_write_gate_needs_the_identifiers(tmp_path):
    incomplete = report()
    del incomplete["model_sha256"]
    with pytest.raises(DataError, match="missing model_sha256"):
        write_gate(tmp_path / "gate.json", incomplete, 0.5)
    assert not (tmp_path / "gate.json").exists()


def valid_gate(tmp_path) -> dict:
    return json.loads(write_gate(tmp_path / "gate.json", report(), 0.5).read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda g: g.pop("model_sha256"), "missing model_sha256"),
        (lambda g: g.pop("threshold"), "missing threshold"),
        (lambda g: g.update(dataset_sha256="xyz"), "dataset_sha256"),
        (lambda g: g.update(measured=0.4), "does not record a pass"),
        (lambda g: g.update(passed=False), "does not record a pass"),
        (lambda g: g.update(measured="0.9"), "finite numbers"),
        (lambda g: g.update(metric="accuracy"), "unknown gate metric"),
    ],
)
def test_read_gate_validates_the_file(tmp_path, change, message):
    gate = valid_gate(tmp_path)
    change(gate)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(gate))
    with pytest.raises(DataError, match=message):
        read_gate(path)


def test_read_gate_missing_or_not_json(tmp_path):
    with pytest.raises(DataError, match="gate file not found"):
        read_gate(tmp_path / "gate.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not JSON"):
        read_gate(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="JSON object"):
        read_gate(tmp_path / "list.json")
