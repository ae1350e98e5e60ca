"""The notebook pipeline end to end: profile -> demo data -> notebook -> summary."""

import json

import pytest
from click.testing import CliRunner

from mlkit.cli import cli

pytestmark = pytest.mark.notebook


def test_pipeline_runs_every_stage_and_writes_a_summary(tiny_pipeline):
    tmp_path, summary = tiny_pipeline
    assert summary["profile"] == "tiny" and summary["data"]["synthetic"] is True
    assert [s["name"] for s in summary["stages"]] == [
        "01_preprocess",
        "02_train",
        "03_evaluate",
        "04_deploy",
        "05_scaling_demo",
    ]
    metrics = {s["name"]: s["metrics"] for s in summary["stages"]}
    assert metrics["01_preprocess"]["synthetic"] is True
    assert metrics["03_evaluate"]["model_sha256"] == gate_sha(tmp_path)
    assert metrics["04_deploy"]["schema_checks_failed"] == 0
    assert metrics["04_deploy"]["smoke_test"]["ok"] == 3
    assert metrics["04_deploy"]["image"].endswith("abc1234-" + gate_sha(tmp_path)[:12])
    assert metrics["05_scaling_demo"]["max_replicas"] > 1
    # The scaling notebook glues what the milestone report pastes.
    from mlkit.pipeline.evidence import notebook_glue_keys

    glued = notebook_glue_keys(tmp_path / "executed" / "05_scaling_demo.ipynb")
    assert {"scaling_timeline", "capacity_curve", "hpa_settings"} <= glued
    assert summary["stages"][2]["parameters"]["min_macro_f1"] == 0.0
    gate = json.loads((tmp_path / "build" / "evaluate" / "gate.json").read_text())
    assert gate["passed"] is True
    stage = summary["stages"][0]
    assert (tmp_path / "executed" / "01_preprocess.ipynb").is_file()
    artifacts = {a["path"].rsplit("/", 1)[-1]: a["sha256"] for a in stage["artifacts"]}
    card = json.loads(
        (tmp_path / "build" / "prepared" / "dataset_card.json").read_text()
    )
    assert artifacts["manifest.parquet"] == card["manifest"]["sha256"]
    on_disk = json.loads((tmp_path / "build" / "run_summary.json").read_text())
    assert on_disk["stages"][0]["parameters"]["min_samples_per_label"] == 2


def gate_sha(tmp_path):
    gate = json.loads((tmp_path / "build" / "evaluate" / "gate.json").read_text())
    return gate["model_sha256"]


def test_cli_synth_prepare_and_a_pipeline_that_stops_at_a_failing_stage(tmp_path):
    runner = CliRunner()
    data = tmp_path / "demo"
    result = runner.invoke(
        cli, ["data", "synth", str(data), "--n-samples", "60", "--clean"]
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout.split("\n", 1)[1])
    assert sum(sum(c.values()) for c in counts.values()) == 60

    config = tmp_path / "prepare.yaml"
    config.write_text(f"data_root: {data}\nout_dir: {tmp_path / 'prepared'}\n")
    result = runner.invoke(
        cli,
        [
            "data",
            "prepare",
            "--config",
            str(config),
            "--seed",
            "5",
            "--label-map",
            "hives=urticaria",
            "--image-check",
            "header",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "(60 rows)" in result.stdout and "(0 rows)" in result.stdout

    # A stage that fails stops the run: the CLI exits 1 and names the notebook
    # cell, and no run summary is written. (The gate's own failure is tested on
    # the evaluation notebook, in tests/notebooks.)
    profile = tmp_path / "bad.yaml"
    profile.write_text(
        "name: bad\ndata: {synthetic: {n_samples: 60}}\n"
        "stages: {01_preprocess: {min_samples_per_label: 100000}}\n"
    )
    result = runner.invoke(
        cli,
        [
            "pipeline",
            "run",
            "--profile",
            str(profile),
            "--workdir",
            str(tmp_path / "w"),
            "--executed-dir",
            str(tmp_path / "x"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "01_preprocess.ipynb: cell" in result.output
    assert "no rows left" in result.output
    assert not (tmp_path / "w" / "run_summary.json").exists()
