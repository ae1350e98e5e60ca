"""The report's evidence fragments, from small fake inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from mlkit.cli import cli
from mlkit.evaluate.gate import write_gate
from mlkit.pipeline import evidence
from mlkit.pipeline.evidence import (
    EvidenceError,
    EvidenceSources,
    cicd_fragment,
    collect_test_ids,
    coverage_fragment,
    deployment_fragment,
    infrastructure_fragment,
    make_targets,
    makefile_targets,
    scaling_fragment,
    table,
    toc_files,
    write_evidence,
)

ROOT = Path(__file__).resolve().parents[3]
MANIFEST_SHA = "a" * 64
TEST_IDS = [
    "tests/unit/pipeline/test_runner.py::test_a",
    "tests/unit/pipeline/test_runner.py::test_b[1]",
    "tests/unit/nowhere/test_ghost.py::test_c",
    "tests/integration/test_pipeline.py::test_pipeline_runs_every_stage",
    "tests/test_project.py::test_other",
]
WORKFLOW = {
    "name": "ci",
    True: {"push": {"branches": ["main"]}, "pull_request": None},
    "jobs": {
        "test": {"steps": [{"uses": "actions/checkout@x"}, {"run": "make test"}]},
        "report": {
            "needs": "test",
            "steps": [
                {"name": "Pipeline and book", "run": "make PROFILE=ci report"},
                {"uses": "actions/upload-artifact@y"},
            ],
        },
    },
}


def _repo(tmp_path: Path, *, toc_extra: str = "") -> Path:
    """A fake checkout: Makefile, pyproject, workflows and a book."""
    root = tmp_path / "repo"
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "Makefile").write_text(
        "test: setup  ## Lint and tests.\nreport:  ## Pipeline and book.\n"
    )
    (root / "pyproject.toml").write_text("[tool.coverage.report]\nfail_under = 90\n")
    workflow = {**WORKFLOW, "on": WORKFLOW[True]}
    del workflow[True]
    (root / ".github" / "workflows" / "ci.yml").write_text(yaml.safe_dump(workflow))
    shutil.copy(
        ROOT / ".github" / "workflows" / "deploy.yml", root / ".github" / "workflows"
    )
    (root / "book" / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n"
        "  - file: notebooks/01_preprocess\n" + toc_extra
    )
    (root / "book" / "notebooks" / "01_preprocess.ipynb").write_text("{}")
    return root


def _report(model_sha: str) -> dict:
    return {
        "metrics": {"macro_f1": 0.8125, "accuracy": 0.75, "ece": 0.03125, "n": 64},
        "model_sha256": model_sha,
        "manifest_sha256": MANIFEST_SHA,
        "synthetic": True,
        "ablations": {"image_only": {"macro_f1": 0.5, "accuracy": 0.5, "n": 64}},
    }


def _pipeline_outputs(work: Path) -> str:
    """A run summary, cards, a report and a passing gate; returns the model sha."""
    model = work / "train" / "model"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"fake weights")
    sha = hashlib.sha256(b"fake weights").hexdigest()
    (model / "model_card.json").write_text(
        json.dumps(
            {
                "classes": ["acne", "eczema"],
                "weights_sha256": sha,
                "git_commit": "f" * 40,
                "training": {
                    "epoch": 7,
                    "val_macro_f1": 0.6875,
                    "config": {"epochs": 11, "early_stopping_patience": 3},
                },
            }
        )
    )
    (work / "prepared").mkdir()
    (work / "prepared" / "dataset_card.json").write_text(
        json.dumps(
            {
                "rows": 123,
                "labels": ["acne", "eczema"],
                "manifest": {"sha256": MANIFEST_SHA},
                "counts": {
                    "split": {"train": 100, "test": 23},
                    "dataset": {"ddi": 123},
                },
            }
        )
    )
    report = _report(sha)
    (work / "evaluate").mkdir()
    (work / "evaluate" / "evaluation_report.json").write_text(json.dumps(report))
    write_gate(work / "evaluate" / "gate.json", report, 0.625)
    summary = {
        "profile": "ci",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:05:00+00:00",
        "data": {"synthetic": True},
        "stages": [
            {
                "name": "01_preprocess",
                "seconds": 4.25,
                "artifacts": [{"path": "/x/manifest.parquet", "sha256": MANIFEST_SHA}],
            },
            {"name": "02_train", "seconds": 86.5, "artifacts": []},
        ],
    }
    (work / "run_summary.json").write_text(json.dumps(summary))
    return sha


def test_table_escapes_pipes_and_newlines():
    text = table(["a", "b"], [["x|y", "two\nlines"]])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| x\\|y | two lines |"]


def test_make_targets_and_makefile_help():
    assert make_targets("make test") == ["test"]
    assert make_targets("make PROFILE=full -j2 pipeline book\necho make") == [
        "pipeline",
        "book",
    ]
    assert make_targets("cd x && make lint") == ["lint"]
    assert make_targets("echo nothing") == []
    help_texts = makefile_targets((ROOT / "Makefile").read_text())
    assert help_texts["test"].startswith("Lint")
    assert "bench" in help_texts and "evidence" in help_texts


def test_toc_files_reads_nested_entries(tmp_path):
    book = _repo(tmp_path, toc_extra="  - file: notebooks/02_train.ipynb\n") / "book"
    assert toc_files(book) == {"intro", "notebooks/01_preprocess", "notebooks/02_train"}


def test_every_fragment_says_what_is_missing(tmp_path):
    root = _repo(tmp_path)
    sources = EvidenceSources(
        repo_root=root, workdir=root / "build", book_dir=root / "book"
    )
    written = write_evidence(sources, tmp_path / "out", test_ids=TEST_IDS)

    text = {
        name: path.read_text() for name, path in written.items() if name != "data_flow"
    }
    assert "`make pipeline` produces it" in text["ml_workflow"]
    assert (
        "build/evaluate/gate.json" in text["gate"] and "Not available" in text["gate"]
    )
    assert "`make test` produces it" in text["coverage"]
    assert "mock_preview.py --stack dev" in text["infrastructure"]
    assert "make report" in text["scaling"]
    assert "Not available" in text["kubernetes"]
    assert "`notebooks/04_deploy` (not in this build of the book)" in text["kubernetes"]
    assert "| missing |" in text["provenance"]
    # Nothing measured is shown: no decimal number in any pipeline fragment.
    for name in ("ml_workflow", "gate", "coverage", "infrastructure", "kubernetes"):
        assert not any(ch.isdigit() for ch in text[name].replace("04_deploy", "")), name
    with Image.open(written["data_flow"]) as image:
        assert image.size[0] > 800 and image.size[1] > 200


def test_fragments_from_pipeline_outputs(tmp_path):
    root = _repo(tmp_path)
    work = root / "build"
    sha = _pipeline_outputs(work)
    sources = EvidenceSources(repo_root=root, workdir=work, book_dir=root / "book")
    written = write_evidence(sources, tmp_path / "out", test_ids=TEST_IDS)
    text = {
        name: path.read_text() for name, path in written.items() if name != "data_flow"
    }

    ml = text["ml_workflow"]
    assert "**Synthetic data.**" in ml
    assert "{doc}`/notebooks/01_preprocess`" in ml and "`notebooks/02_train`" in ml
    assert "123 rows" in ml and "train 100, test 23" in ml
    assert "best epoch 7 of at most 11" in ml and "0.6875" in ml
    assert "macro-F1 0.8125" in ml and "(synthetic)." in ml
    assert "| image_only | 0.5000 |" in ml

    gate = text["gate"]
    assert "**Synthetic data.**" in gate
    assert f"`{sha}`" in gate and "| 0.6250 | 0.8125 | passed |" in gate
    assert f"<git sha>-{sha[:12]}" in gate

    retraining = text["retraining"]
    assert (
        "`ci` profile: 0.50" in retraining
        and "deploy workflow default: 0.50" in retraining
    )
    assert "`ci` config: at most" in retraining
    assert sha[:12] in retraining

    # The fake root is not a git checkout: the image tag cannot be formed.
    assert "not a git checkout" in text["kubernetes"]


def test_kubernetes_objects_for_the_gated_model(tmp_path):
    work = tmp_path / "build"
    sha = _pipeline_outputs(work)
    objects, rendered, context = evidence._kubernetes_objects(
        work / "train" / "model", work / "evaluate" / "gate.json", "dev", ROOT
    )
    kinds = [o["kind"] for o in objects]
    assert kinds[0] == "Namespace" and "Deployment" in kinds
    assert sha[:12] in context and f"-{sha[:12]}" in rendered

    text = evidence.kubernetes_fragment(
        objects, rendered, context=context, deploy_link="`notebooks/04_deploy`"
    )
    assert "| Deployment | mlkit-serve |" in text and "replicas set by the HPA" in text
    assert "````{dropdown}" in text and "kind: HorizontalPodAutoscaler" in text


def test_kubernetes_refuses_a_gate_for_another_model(tmp_path):
    work = tmp_path / "build"
    _pipeline_outputs(work)
    (work / "train" / "model" / "model.safetensors").write_bytes(b"other weights")
    objects, rendered, context = evidence._kubernetes_objects(
        work / "train" / "model", work / "evaluate" / "gate.json", "dev", ROOT
    )
    assert objects is None and rendered is None
    assert "cannot be used" in context and "do not match" in context


def test_coverage_fragment_lists_modules_and_unexecuted_functions():
    coverage = {
        "meta": {"version": "7.17.5", "timestamp": "2026-01-01T10:00:00.123"},
        "totals": {"percent_covered": 91.25, "num_statements": 400},
        "files": {
            "mlkit/b.py": {
                "summary": {
                    "num_statements": 10,
                    "missing_lines": 5,
                    "percent_covered": 50.0,
                },
                "functions": {
                    "": {"summary": {"num_statements": 3, "covered_lines": 0}},
                    "never": {"summary": {"num_statements": 4, "covered_lines": 0}},
                    "half": {"summary": {"num_statements": 4, "covered_lines": 2}},
                },
            },
            "mlkit/a.py": {
                "summary": {
                    "num_statements": 2,
                    "missing_lines": 0,
                    "percent_covered": 100,
                },
                "functions": {},
            },
        },
    }
    text = coverage_fragment(coverage, floor=90, path="coverage.json")
    assert "**91.2%** of 400 statements (at or above the floor)" in text
    assert "fails under 90%" in text
    assert text.index("`mlkit/a.py`") < text.index("`mlkit/b.py`")
    assert "- `mlkit/b.py`: `never`" in text and "`half`" not in text
    assert "Functions that no test executes (1)" in text
    low = coverage_fragment(coverage, floor=95, path="coverage.json")
    assert "(BELOW the floor)" in low


def test_infrastructure_fragment_from_a_mock_preview():
    preview = {
        "stack": "dev",
        "placeholders": {"mlkit:git_sha": "0000000"},
        "resources": [
            {"type": "gcp:container/cluster:Cluster", "name": "cluster"},
            {
                "type": "kubernetes:apps/v1:Deployment",
                "name": "serve",
                "key_inputs": {"spec.replicas": 2, "zz": "x" * 300},
            },
        ],
        "outputs": {"kubeconfig_context": "gke"},
    }
    text = infrastructure_fragment(preview, path="p.json", stack="dev")
    assert "declares 2 resources (1 gcp, 1 kubernetes)" in text
    assert "`mlkit:git_sha` = `0000000`" in text
    assert "spec.replicas=2" in text and "..." in text
    assert '| kubeconfig_context | `"gke"` |' in text
    with pytest.raises(EvidenceError, match="p.json"):
        infrastructure_fragment(
            {"resources": [{"name": "x"}]}, path="p.json", stack="dev"
        )


def _glued_notebook(path: Path, keys: list[str]) -> None:
    outputs = [
        {
            "output_type": "display_data",
            "metadata": {"scrapbook": {"name": key, "mime_prefix": ""}},
            "data": {"text/plain": key},
        }
        for key in keys
    ]
    cell = {"cell_type": "code", "metadata": {}, "source": "", "outputs": outputs}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}}))


def test_scaling_fragment_pastes_glued_outputs(tmp_path):
    book = _repo(tmp_path, toc_extra="  - file: notebooks/05_scaling_demo\n") / "book"
    notebook = book / "notebooks" / "05_scaling_demo.ipynb"
    toc = toc_files(book)
    assert "Not available" in scaling_fragment(book, toc)

    _glued_notebook(notebook, ["scaling_timeline", "hpa_settings"])
    assert "glues no `capacity_curve`" in scaling_fragment(book, toc)

    _glued_notebook(notebook, ["scaling_timeline", "capacity_curve", "hpa_settings"])
    text = scaling_fragment(book, toc)
    assert (
        "```{glue} capacity_curve\n:doc: notebooks/05_scaling_demo.ipynb\n```" in text
    )
    assert "{doc}`/notebooks/05_scaling_demo`" in text
    # A notebook that the book does not list cannot be pasted from.
    assert "Not available" in scaling_fragment(
        book, toc - {"notebooks/05_scaling_demo"}
    )


def test_cicd_fragment_names_make_targets_and_what_waits():
    text = cicd_fragment(
        {".github/workflows/ci.yml": WORKFLOW}, {"test": "Lint and tests."}
    )
    assert "on push (main), pull_request." in text
    assert "| `test` | `make test`: Lint and tests. | `report` |" in text
    assert "`make report`: not a Makefile target; actions/upload-artifact | - |" in text
    assert "checkout" not in text


def test_deployment_fragment_follows_the_deploy_workflow():
    workflow = yaml.safe_load(
        (ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    )
    text = deployment_fragment(workflow, path="deploy.yml")
    assert "cancel-in-progress `false`" in text
    assert "workflow_dispatch (inputs: environment)" in text
    assert text.index("(`gate`") < text.index("(`image`") < text.index("(`deploy`")
    assert "passes on `model_sha256`" in text
    assert "   - pulumi up\n" in text
    assert "Not available" in deployment_fragment(None, path="deploy.yml")


def test_unit_and_integration_fragments(tmp_path):
    unit = evidence.unit_tests_fragment(TEST_IDS, ROOT)
    assert "3 unit tests in 2 files" in unit
    assert (
        "| `tests/unit/pipeline/test_runner.py` | `mlkit/pipeline/runner.py` | 2 |"
        in unit
    )
    assert "| `tests/unit/nowhere/test_ghost.py` | - | 1 |" in unit
    integration = evidence.integration_tests_fragment(TEST_IDS, ROOT)
    assert "**`tests/integration/`** (1 tests)" in integration
    assert "The notebook pipeline end to end" in integration
    assert "  - test pipeline runs every stage" in integration
    none = evidence.integration_tests_fragment(TEST_IDS[:2], ROOT)
    assert none == "No integration tests were collected.\n"


def test_collect_test_ids_runs_pytest(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_one():\n    pass\n")
    assert collect_test_ids(tmp_path, ["test_x.py"]) == ["test_x.py::test_one"]
    (tmp_path / "test_y.py").write_text("def test_broken(:\n")
    with pytest.raises(EvidenceError, match="exit code"):
        collect_test_ids(tmp_path, ["test_y.py"])


def test_a_truncated_input_is_an_error(tmp_path):
    root = _repo(tmp_path)
    (root / "build").mkdir()
    (root / "build" / "run_summary.json").write_text('{"profile": ')
    sources = EvidenceSources(
        repo_root=root, workdir=root / "build", book_dir=root / "book"
    )
    with pytest.raises(EvidenceError, match="run_summary.json: not valid JSON"):
        write_evidence(sources, tmp_path / "out", test_ids=[])


def test_cli_writes_the_fragments(tmp_path, monkeypatch):
    root = _repo(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setattr(evidence, "collect_test_ids", lambda _root: TEST_IDS)
    result = CliRunner().invoke(
        cli, ["pipeline", "evidence", "--workdir", "build", "--out", "gen"]
    )
    assert result.exit_code == 0, result.output
    assert "unit_tests: gen/unit_tests.md" in result.output
    assert "3 unit tests" in (root / "gen" / "unit_tests.md").read_text()
    assert (root / "gen" / "data_flow.png").is_file()
