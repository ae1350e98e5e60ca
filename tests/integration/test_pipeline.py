"""The notebook pipeline end to end: profile -> demo data -> notebook -> summary."""

import json

import pytest
from click.testing import CliRunner

from mlkit.cli import cli
from mlkit.pipeline.runner import PipelineError, run_pipeline

pytestmark = pytest.mark.notebook


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\n"
        "data: {synthetic: {n_samples: 120, seed: 2}}\n"
        "stages:\n  01_preprocess: {min_samples_per_label: 2, image_check: header}\n"
    )
    return path


def test_pipeline_runs_every_stage_and_writes_a_summary(tmp_path, profile):
    summary = run_pipeline(
        profile, workdir=tmp_path / "build", executed_dir=tmp_path / "executed"
    )
    assert summary["profile"] == "tiny" and summary["data"]["synthetic"] is True
    stage = summary["stages"][0]
    assert stage["name"] == "01_preprocess"
    assert (tmp_path / "executed" / "01_preprocess.ipynb").is_file()
    artifacts = {a["path"].rsplit("/", 1)[-1]: a["sha256"] for a in stage["artifacts"]}
    card = json.loads(
        (tmp_path / "build" / "prepared" / "dataset_card.json").read_text()
    )
    assert artifacts["manifest.parquet"] == card["manifest"]["sha256"]
    on_disk = json.loads((tmp_path / "build" / "run_summary.json").read_text())
    assert on_disk["stages"][0]["parameters"]["min_samples_per_label"] == 2


def test_pipeline_stops_at_a_failing_stage(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text(
        "name: bad\ndata: {synthetic: {n_samples: 60}}\n"
        "stages: {01_preprocess: {min_samples_per_label: 100000}}\n"
    )
    with pytest.raises(PipelineError, match="01_preprocess.ipynb: cell .*no rows left"):
        run_pipeline(profile, workdir=tmp_path / "b", executed_dir=tmp_path / "e")
    assert not (tmp_path / "b" / "run_summary.json").exists()


def test_cli_synth_prepare_and_pipeline(tmp_path, profile):
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
    assert result.exit_code == 0, result.output
    assert "01_preprocess:" in result.stdout
