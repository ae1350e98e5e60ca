import pytest

from mlkit.data.prepare import PrepareConfig, prepare
from mlkit.errors import ConfigError, DataError
from mlkit.evaluate.run import EvaluateRunConfig, evaluate_model, parse_evaluate_config
from mlkit.train.run import parse_train_run_config, train_model
from tests.conftest import TINY_TRAINING


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        parse_evaluate_config(
            {
                "model_dir": tmp_path,
                "manifest": tmp_path,
                "out_dir": tmp_path,
                "batch_size": 0,
            }
        )


def test_evaluation_refuses_a_manifest_without_test_rows(demo_data, tmp_path):
    root, _ = demo_data
    prepared = tmp_path / "prepared"
    prepare(
        PrepareConfig(data_root=root, out_dir=prepared, split_fractions=(0.8, 0.2, 0.0))
    )
    config = parse_train_run_config(
        {
            **TINY_TRAINING,
            "manifest": prepared,
            "out_dir": tmp_path / "train",
            "train": {**TINY_TRAINING["train"], "epochs": 1},
        }
    )
    result = train_model(config)
    with pytest.raises(DataError, match="no test rows; evaluation never falls back"):
        evaluate_model(
            EvaluateRunConfig(
                model_dir=result.model_dir, manifest=prepared, out_dir=tmp_path / "e"
            )
        )
