"""Tests of a release: gate first, the objects table, smoke tests, the report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlkit.deploy.release import (
    objects_table,
    prepare_release,
    sample_requests,
    smoke_test,
    write_release,
)
from mlkit.errors import ConfigError, DataError
from mlkit.evaluate.gate import GateFailed

REPO = "registry.example/mlkit/mlkit-serve"


def test_release_is_built_for_the_gated_model(gated_model, tmp_path):
    model_dir, gate_file = gated_model
    release = prepare_release(
        model_dir,
        gate_file,
        image_repository=REPO,
        git_sha="abcdef1",
        overrides={"max_replicas": 7},
    )
    sha = json.loads(gate_file.read_text())["model_sha256"]
    assert release.model_sha256 == sha
    assert release.image == f"{REPO}:abcdef1-{sha[:12]}"
    hpa = next(o for o in release.objects if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 7
    settings = release.local_settings()
    assert settings["expected_model_sha256"] == sha
    assert "port" not in settings and "model_dir" not in settings

    table = objects_table(release.objects)
    assert list(table["kind"]) == [o["kind"] for o in release.objects]
    row = table.set_index("kind").loc["HorizontalPodAutoscaler", "settings"]
    assert row.startswith("1-7 replicas")

    path = write_release(release, tmp_path / "out", validation=[], smoke=None)
    report = json.loads(path.read_text())
    assert report["schema_checks"] == {"total": 0, "failed": 0, "versions": []}
    assert "smoke_test" not in report
    assert len(report["objects"]) == len(release.objects)


def test_release_refuses_reserved_overrides_and_missing_gates(gated_model, tmp_path):
    model_dir, gate_file = gated_model
    with pytest.raises(ConfigError, match="image comes from the gated model"):
        prepare_release(
            model_dir, gate_file, image_repository=REPO, overrides={"image": "x:y"}
        )
    with pytest.raises(DataError):
        prepare_release(model_dir, tmp_path / "gate.json", image_repository=REPO)
    failed = tmp_path / "failed.json"
    report = {"metrics": {"macro_f1": 0.1}, "model_sha256": "ab" * 32}
    with pytest.raises(GateFailed):
        from mlkit.evaluate.gate import write_gate

        write_gate(failed, report, 0.5)
    assert not failed.exists()


def test_smoke_test_reports_failures_as_rows(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"not really")
    # Nothing listens on port 9: the failure is a row, not an exception.
    table = smoke_test("http://127.0.0.1:9", [image], ["rash"], ["eczema"], timeout_s=2)
    assert list(table.columns[:3]) == ["image", "label", "status"]
    assert table.loc[0, "status"] is None or pd.isna(table.loc[0, "status"])
    assert table.loc[0, "error"] == "ConnectError"
    with pytest.raises(DataError, match="one text per image"):
        smoke_test("http://127.0.0.1:9", [image], ["a", "b"])


def test_sample_requests_come_from_the_split(prepared_demo):
    rows = sample_requests(prepared_demo, 5, split="test", seed=1)
    assert len(rows) == 5
    assert list(rows.columns) == ["path", "text", "label"]
    assert all(p.endswith((".jpg", ".jpeg", ".png")) for p in rows["path"])
    with pytest.raises(DataError, match="no 'holdout' rows"):
        sample_requests(prepared_demo, 5, split="holdout")
