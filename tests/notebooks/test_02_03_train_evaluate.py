"""02_train.ipynb and 03_evaluate.ipynb under papermill, including a failing gate."""

import json
from pathlib import Path

import pytest

from mlkit.pipeline.runner import PipelineError, run_notebook
from tests.conftest import TINY_TRAINING

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def trained(prepared_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("nb_train")
    overrides = {k: v for k, v in TINY_TRAINING.items() if k != "train"}
    run_notebook(
        NOTEBOOKS / "02_train.ipynb",
        out / "02_train.ipynb",
        {
            "manifest": str(prepared_demo),
            "out_dir": str(out / "train"),
            "overrides": overrides,
            "epochs": 2,
        },
    )
    return out


def test_train_notebook_writes_a_model_and_plots(trained):
    model_dir = trained / "train" / "model"
    assert (model_dir / "model.safetensors").is_file()
    executed = json.loads((trained / "02_train.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    text = json.dumps(outputs)
    assert "Synthetic data." in text and "Best validation macro-F1" in text


def test_evaluate_notebook_gate_passes(trained, prepared_demo, tmp_path):
    run_notebook(
        NOTEBOOKS / "03_evaluate.ipynb",
        tmp_path / "03_evaluate.ipynb",
        {
            "model_dir": str(trained / "train" / "model"),
            "manifest": str(prepared_demo),
            "out_dir": str(tmp_path / "evaluate"),
            "min_macro_f1": 0.0,
        },
    )
    gate = json.loads((tmp_path / "evaluate" / "gate.json").read_text())
    assert gate["passed"] is True and gate["threshold"] == 0.0


def test_evaluate_notebook_fails_the_gate_and_writes_no_gate_file(
    trained, prepared_demo, tmp_path
):
    out = tmp_path / "evaluate"
    out.mkdir()
    (out / "gate.json").write_text("{}")  # a stale gate must not survive
    with pytest.raises(
        PipelineError,
        match=r"Deployment gate failed: test macro-F1 \d\.\d{4} is not above the "
        r"threshold 0\.9990",
    ):
        run_notebook(
            NOTEBOOKS / "03_evaluate.ipynb",
            tmp_path / "03_evaluate.ipynb",
            {
                "model_dir": str(trained / "train" / "model"),
                "manifest": str(prepared_demo),
                "out_dir": str(out),
                "min_macro_f1": 0.999,
            },
        )
    assert not (out / "gate.json").exists()
