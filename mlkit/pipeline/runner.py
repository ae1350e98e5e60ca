"""Run the project's notebooks in order with papermill.

A profile (YAML, validated) says where the data comes from and which parameters
each stage gets. Each stage is a parameterized notebook; its executed copy is
written where the book reads it. The run stops at the first failing cell and
says which notebook and cell failed; a JSON run summary records stages,
durations and artifacts with their sha256.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import papermill
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlkit._config import packaged_names, read_config
from mlkit._io import sha256_file, write_json
from mlkit.errors import ConfigError, MlkitError, describe_validation_error

log = logging.getLogger(__name__)

SUMMARY_NAME = "run_summary.json"


class PipelineError(MlkitError):
    """A stage failed or could not start; the message names notebook and cell."""


class SynthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_samples: int = Field(default=800, gt=0)
    seed: int = 0


class DataSpec(BaseModel):
    """Where the raw data comes from: generated demo data or a data root."""

    model_config = ConfigDict(extra="forbid")

    synthetic: SynthSpec | None = None
    data_root: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DataSpec:
        if (self.synthetic is None) == (self.data_root is None):
            raise ValueError("set exactly one of data.synthetic and data.data_root")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    data: DataSpec
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    notebook: str  # file name under the notebooks directory


STAGES: tuple[Stage, ...] = (
    Stage("01_preprocess", "01_preprocess.ipynb"),
    Stage("02_train", "02_train.ipynb"),
    Stage("03_evaluate", "03_evaluate.ipynb"),
    Stage("04_deploy", "04_deploy.ipynb"),
    Stage("05_scaling_demo", "05_scaling_demo.ipynb"),
)


def profile_names() -> list[str]:
    return packaged_names("mlkit.pipeline", "profiles")


def load_profile(profile: str | Path) -> Profile:
    """A packaged profile by name (``ci``, ``full``) or a YAML file by path."""
    data, source = read_config(
        profile, package="mlkit.pipeline", folder="profiles", what="profile"
    )
    try:
        parsed = Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid profile: {describe_validation_error(exc)}"
        ) from exc
    unknown = sorted(set(parsed.stages) - {s.name for s in STAGES})
    if unknown:
        raise ConfigError(
            f"{source}: unknown stage(s) {', '.join(unknown)}; "
            f"known: {', '.join(s.name for s in STAGES)}"
        )
    return parsed


def notebook_parameters(notebook: str | Path) -> set[str]:
    """Names defined in the notebook's ``parameters`` cell.

    Raises PipelineError when the notebook has no cell tagged ``parameters``:
    papermill would otherwise inject values silently at the top.
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        raise PipelineError(f"{notebook}: notebook not found")
    params = papermill.inspect_notebook(str(notebook))
    if not params:
        raise PipelineError(
            f"{notebook}: no cell tagged 'parameters'; tag the cell that defines "
            "the notebook's parameters"
        )
    return set(params)


def run_notebook(
    notebook: str | Path,
    output: str | Path,
    parameters: dict[str, Any],
    *,
    timeout_s: int = 900,
    start_timeout_s: int = 120,
    progress: bool = False,
) -> float:
    """Execute ``notebook`` into ``output`` with ``parameters``; return seconds.

    Every parameter must exist in the notebook's parameters cell, so a typo is
    an error instead of a silently ignored value.
    """
    notebook, output = Path(notebook), Path(output)
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise PipelineError(
            f"{notebook}: unknown parameter(s) {', '.join(unknown)}; "
            f"the parameters cell defines {', '.join(sorted(known))}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebook.parent),
            execution_timeout=timeout_s,
            start_timeout=start_timeout_s,
            progress_bar=progress,
            log_output=False,
        )
    except papermill.PapermillExecutionError as exc:
        raise PipelineError(
            f"{notebook.name}: cell {exc.exec_count} (index {exc.cell_index}) failed: "
            f"{exc.ename}: {exc.evalue}; executed copy with the traceback: {output}"
        ) from exc
    seconds = time.perf_counter() - started
    log.info("executed %s in %.1f s -> %s", notebook.name, seconds, output)
    return seconds


def _artifact(path: Path, notebook: str) -> dict[str, Any]:
    if not path.is_file():
        raise PipelineError(
            f"{notebook}: ran without error, but its expected output is missing: "
            f"{path}; the next stage needs it"
        )
    return {"path": str(path), "sha256": sha256_file(path)}


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def stage_metrics(stage: str, artifacts: list[Path]) -> dict[str, Any]:
    """The few numbers of a stage worth seeing in the run summary.

    Read back from the stage's own output files, so the summary repeats what
    the notebooks wrote and never computes a number of its own.
    """
    first = artifacts[0]
    if stage == "01_preprocess":
        card = _read_json(first.with_name("dataset_card.json"))
        return {
            "rows": card["rows"],
            "splits": card["counts"]["split"],
            "synthetic": card["synthetic"],
        }
    if stage == "02_train":
        training = _read_json(first.with_name("model_card.json"))["training"]
        return {
            key: training.get(key) for key in ("epoch", "val_macro_f1", "val_accuracy")
        }
    if stage == "03_evaluate":
        report = _read_json(first)
        return {
            "test_macro_f1": report["metrics"]["macro_f1"],
            "test_accuracy": report["metrics"]["accuracy"],
            "synthetic": report["synthetic"],
            "model_sha256": report["model_sha256"],
        }
    if stage == "04_deploy":
        report = _read_json(first)
        return {
            "image": report["image"],
            "objects": len(report["objects"]),
            "schema_checks_failed": report["schema_checks"]["failed"],
            "smoke_test": report.get("smoke_test"),
        }
    if stage == "05_scaling_demo":
        return _read_json(first).get("headline", {})
    return {}


def run_pipeline(
    profile: str | Path = "ci",
    *,
    workdir: str | Path = "build",
    notebooks_dir: str | Path = "notebooks",
    executed_dir: str | Path = "book/notebooks",
    min_macro_f1: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every stage of ``profile``; return (and write) the run summary.

    ``min_macro_f1`` overrides the profile's deployment-gate threshold (CI sets
    it); the evaluation stage fails, and the run stops, when the model's test
    macro-F1 is not above it.
    """
    spec = load_profile(profile)
    workdir, executed_dir = Path(workdir).resolve(), Path(executed_dir).resolve()
    notebooks_dir = Path(notebooks_dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "profile": spec.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": [],
    }

    # Data: generate the demo dataset, or use the configured data root.
    if spec.data.synthetic is not None:
        from mlkit.data.synthetic import SynthConfig, generate

        data_root = workdir / "data" / "demo"
        started = time.perf_counter()
        generate(
            data_root,
            SynthConfig(
                n_samples=spec.data.synthetic.n_samples, seed=spec.data.synthetic.seed
            ),
            progress=progress,
        )
        summary["data"] = {
            "synthetic": True,
            "data_root": str(data_root),
            "seconds": round(time.perf_counter() - started, 2),
        }
    else:
        data_root = Path(spec.data.data_root).resolve()
        summary["data"] = {"synthetic": False, "data_root": str(data_root)}

    # Stages: each one's outputs are the next one's inputs.
    prepared, trained = workdir / "prepared", workdir / "train"
    evaluated = workdir / "evaluate"
    wiring: dict[str, dict[str, Any]] = {
        "01_preprocess": {"data_root": str(data_root), "out_dir": str(prepared)},
        "02_train": {"manifest": str(prepared), "out_dir": str(trained)},
        "03_evaluate": {
            "model_dir": str(trained / "model"),
            "manifest": str(prepared),
            "out_dir": str(evaluated),
        },
    }
    deployed, scaling = workdir / "deploy", workdir / "scaling"
    gated = {
        "model_dir": str(trained / "model"),
        "gate_file": str(evaluated / "gate.json"),
    }
    wiring["04_deploy"] = {**gated, "manifest": str(prepared), "out_dir": str(deployed)}
    wiring["05_scaling_demo"] = {
        **gated,
        "manifest": str(prepared),
        "out_dir": str(scaling),
    }
    if min_macro_f1 is not None:
        wiring["03_evaluate"]["min_macro_f1"] = min_macro_f1
    outputs: dict[str, list[Path]] = {
        "01_preprocess": [
            prepared / "manifest.parquet",
            prepared / "dataset_card.json",
        ],
        "02_train": [
            trained / "model" / "model.safetensors",
            trained / "model" / "model_card.json",
        ],
        "03_evaluate": [evaluated / "evaluation_report.json", evaluated / "gate.json"],
        "04_deploy": [deployed / "deploy_report.json"],
        "05_scaling_demo": [
            scaling / "scaling_summary.json",
            scaling / "capacity.csv",
            scaling / "timeline.csv",
        ],
    }
    for stage in STAGES:
        parameters = {**spec.stages.get(stage.name, {}), **wiring[stage.name]}
        output = executed_dir / stage.notebook
        seconds = run_notebook(
            notebooks_dir / stage.notebook, output, parameters, progress=progress
        )
        summary["stages"].append(
            {
                "name": stage.name,
                "notebook": str(output),
                "seconds": round(seconds, 2),
                "parameters": parameters,
                "artifacts": [
                    _artifact(p, stage.notebook) for p in outputs[stage.name]
                ],
                "metrics": stage_metrics(stage.name, outputs[stage.name]),
            }
        )

    summary["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(workdir / SUMMARY_NAME, summary)
    return summary
