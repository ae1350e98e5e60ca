"""04_deploy.ipynb under papermill: a gated model is deployed, an ungated one is not."""

import json
import shutil
from pathlib import Path

import pytest

from mlkit.pipeline.runner import PipelineError, run_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.notebook


def test_deploy_notebook_renders_validates_and_smoke_tests(
    gated_model, prepared_demo, tmp_path
):
    model_dir, gate_file = gated_model
    run_notebook(
        NOTEBOOKS / "04_deploy.ipynb",
        tmp_path / "04_deploy.ipynb",
        {
            "model_dir": str(model_dir),
            "gate_file": str(gate_file),
            "manifest": str(prepared_demo),
            "git_sha": "abc1234",
            "smoke_images": 4,
            "out_dir": str(tmp_path / "deploy"),
        },
    )
    report = json.loads((tmp_path / "deploy" / "deploy_report.json").read_text())
    sha = json.loads(gate_file.read_text())["model_sha256"]
    assert report["model_sha256"] == sha
    assert report["image"].endswith(f":abc1234-{sha[:12]}")
    assert report["schema_checks"]["failed"] == 0
    assert report["schema_checks"]["total"] == 4 * len(report["objects"])
    assert report["smoke_test"] == {
        "requests": 4,
        "ok": 4,
        "p50_latency_ms": report["smoke_test"]["p50_latency_ms"],
    }
    kinds = sorted(p.name for p in (tmp_path / "deploy" / "k8s").iterdir())
    assert any("horizontalpodautoscaler" in k for k in kinds)
    text = (tmp_path / "04_deploy.ipynb").read_text()
    assert "synthetic" in text and "exited with status 0" in text


def test_deploy_notebook_refuses_a_gate_for_another_model(
    gated_model, prepared_demo, tmp_path
):
    model_dir, gate_file = gated_model
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    card = json.loads((other / "model_card.json").read_text())
    (other / "model.safetensors").write_bytes(b"different weights")
    card["weights_sha256"] = "cd" * 32
    (other / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(PipelineError, match="gate file is for another model"):
        run_notebook(
            NOTEBOOKS / "04_deploy.ipynb",
            tmp_path / "04_deploy.ipynb",
            {
                "model_dir": str(other),
                "gate_file": str(gate_file),
                "manifest": str(prepared_demo),
                "out_dir": str(tmp_path / "deploy"),
            },
        )
    assert not (tmp_path / "deploy").exists()
