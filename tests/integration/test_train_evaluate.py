"""manifest -> train -> model directory -> evaluate -> gate, on real files."""

import json

import pytest

from mlkit.errors import DataError
from mlkit.evaluate.gate import GateFailed, read_gate, write_gate
from mlkit.evaluate.run import EvaluateRunConfig, evaluate_model
from mlkit.train.run import load_model


@pytest.fixture(scope="module")
def report(tiny_model, prepared_demo, tmp_path_factory):
    result, _ = tiny_model
    out = tmp_path_factory.mktemp("evaluation")
    config = EvaluateRunConfig(
        model_dir=result.model_dir, manifest=prepared_demo, out_dir=out
    )
    return evaluate_model(config), out


def test_model_directory_holds_safetensors_card_and_encoder(tiny_model):
    result, _ = tiny_model
    names = sorted(p.name for p in result.model_dir.iterdir())
    assert names == [
        "model.safetensors",
        "model_card.json",
        "text_encoder.json",
        "text_encoder.safetensors",
    ]
    card = json.loads((result.model_dir / "model_card.json").read_text())
    assert card["dataset"]["synthetic"] is True
    assert card["classes"] == result.classes and len(result.classes) == 10
    assert len(card["image"]["mean"]) == 3 and card["image"]["size"] == 32
    assert card["text_encoder"]["id"].startswith("tfidf-svd:")
    assert len(result.history.epochs) == 2


def test_report_covers_metrics_groups_and_ablations(report, tiny_model):
    rep, out = report
    result, _ = tiny_model
    assert (out / "evaluation_report.json").is_file()
    assert rep["synthetic"] is True
    assert rep["model_sha256"] == result.card["weights_sha256"]
    assert 0 <= rep["metrics"]["macro_f1"] <= 1
    assert {g["group"] for g in rep["groups"]["fitzpatrick_group"]} >= {"I-II"}
    assert set(rep["ablations"]) == {
        "image_and_text",
        "image_only",
        "text_only",
        "text_only_filter_off",
        "text_only_filter_on",
    }
    assert rep["ablations"]["image_and_text"]["macro_f1"] == rep["metrics"]["macro_f1"]


def test_gate_passes_and_fails_on_the_measured_score(report, tmp_path):
    rep, _ = report
    path = write_gate(tmp_path / "gate.json", rep, 0.0)
    assert read_gate(path)["model_sha256"] == rep["model_sha256"]
    with pytest.raises(GateFailed, match="is not above the gate threshold 0.990"):
        write_gate(tmp_path / "gate.json", rep, 0.99)
    assert not (tmp_path / "gate.json").exists()


def test_tampered_weights_are_refused(tiny_model, tmp_path):
    import shutil

    result, _ = tiny_model
    copy = tmp_path / "model"
    shutil.copytree(result.model_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(DataError, match="sha256"):
        load_model(copy)
    (copy / "model.pt").write_bytes(b"")
    with pytest.raises(DataError, match="model.pt"):
        load_model(copy)


def test_evaluation_refuses_another_manifest(tiny_model, demo_data, tmp_path):
    from mlkit.data.prepare import PrepareConfig, prepare

    result, _ = tiny_model
    root, _ = demo_data
    other = tmp_path / "other"
    prepare(PrepareConfig(data_root=root, out_dir=other, image_check="none", seed=9))
    config = EvaluateRunConfig(
        model_dir=result.model_dir, manifest=other, out_dir=tmp_path / "e"
    )
    with pytest.raises(DataError, match="trained on another manifest"):
        evaluate_model(config)


def test_cli_train_evaluate_and_gate(prepared_demo, tmp_path):
    import yaml
    from click.testing import CliRunner

    from mlkit.cli import cli
    from tests.conftest import TINY_TRAINING

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_TRAINING))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "-q",
            "train",
            "--manifest",
            str(prepared_demo),
            "--out-dir",
            str(tmp_path / "train"),
            "--config",
            str(config),
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 1 and len(summary["classes"]) == 10

    # Resuming with more epochs is refused (the config changed); with the same
    # config it continues from the saved state and trains nothing more.
    train = [
        "-q",
        "train",
        "--manifest",
        str(prepared_demo),
        "--out-dir",
        str(tmp_path / "train"),
        "--config",
        str(config),
        "--resume",
    ]
    result = runner.invoke(cli, [*train, "--epochs", "2"])
    assert result.exit_code == 1 and "epochs" in result.output
    result = runner.invoke(cli, [*train, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["best_epoch"] == 1
    result = runner.invoke(cli, [*train, "--backend", "modal"])
    assert result.exit_code == 2 and "local backend only" in result.output

    evaluate = [
        "-q",
        "evaluate",
        "--model-dir",
        summary["model_dir"],
        "--manifest",
        str(prepared_demo),
        "--out-dir",
        str(tmp_path / "eval"),
    ]
    result = runner.invoke(cli, [*evaluate, "--min-macro-f1", "0"])
    assert result.exit_code == 0, result.output
    assert "(synthetic data)" in result.stdout and "gate passed" in result.stdout
    result = runner.invoke(cli, evaluate, env={"MLKIT_MIN_MACRO_F1": "0.999"})
    assert result.exit_code == 1
    assert "is not above the gate threshold 0.999" in result.output
    assert not (tmp_path / "eval" / "gate.json").exists()


def test_cli_cloud_sync_dry_run(tmp_path):
    from click.testing import CliRunner

    from mlkit.cli import cli

    result = CliRunner().invoke(
        cli, ["cloud", "sync", str(tmp_path), "runs/demo", "--dry-run", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        "modal",
        "volume",
        "put",
        "mlkit-data",
        str(tmp_path),
        "/runs/demo",
        "--force",
    ]
