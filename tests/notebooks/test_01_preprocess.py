"""01_preprocess.ipynb under papermill, as the pipeline and CI run it."""

import json
from pathlib import Path

import nbformat
import pytest

from mlkit.data.manifest import read_card, read_manifest
from mlkit.pipeline.runner import PipelineError, run_notebook

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_preprocess.ipynb"

pytestmark = pytest.mark.notebook


def _outputs_text(nb):
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            texts.append(data.get("text/markdown", "") + data.get("text/plain", ""))
            texts.append(output.get("text", ""))
    return "\n".join(texts)


def test_notebook_generates_demo_data_and_writes_the_manifest(tmp_path):
    data_root, out_dir = tmp_path / "demo", tmp_path / "prepared"
    executed = tmp_path / "01_preprocess.ipynb"
    run_notebook(
        NOTEBOOK,
        executed,
        {"data_root": str(data_root), "out_dir": str(out_dir), "seed": 1},
    )
    manifest = read_manifest(out_dir)
    card = read_card(out_dir / "dataset_card.json")
    assert (data_root / "synthetic.json").is_file()
    assert card["synthetic"] is True and len(manifest) == card["rows"] > 0

    nb = nbformat.read(executed, as_version=4)
    text = _outputs_text(nb)
    assert "Synthetic data." in text
    assert card["manifest"]["sha256"][:16] in text
    images = sum(
        "image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])
    )
    assert images >= 2  # label counts and Fitzpatrick-per-split plots
    errors = [
        o
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert errors == []
    assert json.dumps(card["counts"]["split"])


def test_notebook_failure_names_the_cell(tmp_path):
    with pytest.raises(PipelineError, match=r"01_preprocess.ipynb: cell .*ConfigError"):
        run_notebook(
            NOTEBOOK,
            tmp_path / "out.ipynb",
            {
                "data_root": str(tmp_path / "none"),
                "out_dir": str(tmp_path / "o"),
                "synthesize_if_missing": False,
                "image_check": "everything",
            },
        )
