import nbformat
import pytest

from mlkit.errors import ConfigError
from mlkit.pipeline.runner import (
    STAGES,
    PipelineError,
    load_profile,
    notebook_parameters,
    profile_names,
    run_notebook,
)


def _notebook(path, *cells, tagged=True):
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(cells[0])
    if tagged:
        first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(c) for c in cells[1:]]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    nbformat.write(nb, path)
    return path


def test_packaged_profiles_load():
    assert {"ci", "full"} <= set(profile_names())
    ci = load_profile("ci")
    assert ci.data.synthetic is not None and ci.data.data_root is None
    assert set(ci.stages) <= {s.name for s in STAGES}
    assert load_profile("full").data.data_root is not None


def test_profile_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_profile("nope")
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {synthetic: {n_samples: 5}, data_root: /d}\n")
    with pytest.raises(ConfigError, match="exactly one of"):
        load_profile(bad)
    bad.write_text("name: x\ndata: {data_root: /d}\nstages: {99_nope: {}}\n")
    with pytest.raises(ConfigError, match="unknown stage"):
        load_profile(bad)


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", "x = 1", tagged=False)
    with pytest.raises(PipelineError, match="no cell tagged 'parameters'"):
        notebook_parameters(path)
    with pytest.raises(PipelineError, match="notebook not found"):
        notebook_parameters(tmp_path / "missing.ipynb")


def test_unknown_parameter_is_refused_before_running(tmp_path):
    path = _notebook(tmp_path / "nb.ipynb", "alpha = 1")
    with pytest.raises(PipelineError, match="unknown parameter.*beta"):
        run_notebook(path, tmp_path / "out.ipynb", {"beta": 2})
    assert not (tmp_path / "out.ipynb").exists()


def test_run_notebook_executes_and_reports_the_failing_cell(tmp_path):
    ok = _notebook(tmp_path / "ok.ipynb", "alpha = 1", "result = alpha * 2\nresult")
    seconds = run_notebook(ok, tmp_path / "out" / "ok.ipynb", {"alpha": 21})
    executed = nbformat.read(tmp_path / "out" / "ok.ipynb", as_version=4)
    assert seconds > 0
    assert executed.cells[-1].outputs[0]["data"]["text/plain"] == "42"

    failing = _notebook(
        tmp_path / "gate.ipynb",
        "threshold = 0.5",
        "assert 0.4 > threshold, 'score 0.4 is not above 0.5'",
    )
    with pytest.raises(
        PipelineError, match=r"gate.ipynb: cell .* AssertionError: score 0.4"
    ):
        run_notebook(failing, tmp_path / "out" / "gate.ipynb", {})


def test_a_stage_without_its_output_is_named(tmp_path):
    from mlkit.pipeline.runner import run_pipeline

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    # A preprocessing notebook that runs fine but writes nothing.
    _notebook(
        notebooks / "01_preprocess.ipynb",
        "data_root = None\nout_dir = None",
        "print('forgot to write the manifest')",
    )
    profile = tmp_path / "p.yaml"
    profile.write_text(f"name: p\ndata: {{data_root: {tmp_path}}}\n")
    with pytest.raises(PipelineError) as info:
        run_pipeline(
            profile,
            workdir=tmp_path / "build",
            notebooks_dir=notebooks,
            executed_dir=tmp_path / "executed",
        )
    message = str(info.value)
    assert message.startswith("01_preprocess.ipynb: ran without error")
    assert "manifest.parquet" in message
    assert not (tmp_path / "build" / "run_summary.json").exists()
