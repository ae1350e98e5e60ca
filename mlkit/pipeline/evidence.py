"""Evidence for the milestone report, generated from files instead of typed.

``book/milestone_report.md`` is a frame of short texts; every number, table and
plot in it comes from a markdown fragment that this module writes into a
git-ignored folder (``book/_generated``), which the page pulls in with MyST
``{include}`` directives. A fragment is built from what the project produced:
the pipeline's run summary, dataset card, model card, evaluation report and
gate under the work directory; the coverage JSON that ``make test`` writes; the
workflow files; the test suite as pytest collects it; the Kubernetes objects
that ``mlkit.deploy`` renders; the Pulumi program's mock preview; and the
executed scaling notebook's glued plots.

When an input is missing, its fragment says which file is missing and which
command produces it. It never shows a number that no file holds, and wherever a
number comes from the synthetic demo data it says so.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlkit._io import atomic_open, atomic_path, sha256_file
from mlkit.errors import MlkitError

log = logging.getLogger(__name__)

# Glued outputs that notebook 05 (the scaling demonstration) provides.
SCALING_NOTEBOOK = "notebooks/05_scaling_demo"
SCALING_FIGURES = ("scaling_timeline", "capacity_curve")
SCALING_VALUES = ("hpa_settings",)
DEPLOY_NOTEBOOK = "notebooks/04_deploy"
# The Kubernetes objects in the report name an image; the real registry is set
# by the deploy workflow.
PLACEHOLDER_REPOSITORY = "registry.example/mlkit/serve"
STAGE_NOTEBOOKS = (
    "notebooks/01_preprocess",
    "notebooks/02_train",
    "notebooks/03_evaluate",
)

SYNTHETIC_NOTE = (
    "```{important}\n"
    "**Synthetic data.** {what} were measured on the demo dataset that mlkit "
    "generates (`mlkit data synth`), not on real dermatology images. They show "
    "that the pipeline works end to end; they say nothing about clinical "
    "performance.\n"
    "```\n"
)


@dataclass(frozen=True)
class EvidenceSources:
    """Where each input of the report lives.

    ``workdir`` is the pipeline's work directory (``build``); ``book_dir`` the
    book's source folder, whose ``_toc.yml`` and executed notebooks decide which
    pages can be linked. ``coverage_json`` defaults to ``coverage.json`` at the
    repository root (``make test`` writes it) and ``pulumi_preview`` to
    ``<workdir>/infra/preview-<stack>.json``.
    """

    repo_root: Path = Path(".")
    workdir: Path = Path("build")
    book_dir: Path = Path("book")
    coverage_json: Path | None = None
    pulumi_preview: Path | None = None
    stack: str = "dev"

    def path(self, *parts: str) -> Path:
        return self.repo_root / Path(*parts)

    @property
    def coverage_file(self) -> Path:
        return self.coverage_json or self.path("coverage.json")

    @property
    def preview_file(self) -> Path:
        return self.pulumi_preview or (
            self.workdir / "infra" / f"preview-{self.stack}.json"
        )


# -- markdown helpers ---------------------------------------------------------


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; ``|`` in cells is escaped."""
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def blocks(*parts: str | None) -> str:
    """Markdown blocks separated by blank lines (a table or a directive must not
    touch the paragraph before it)."""
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"


def missing(what: str, path: Path | str, command: str) -> str:
    """The fragment for an input that does not exist (yet)."""
    return (
        "```{warning}\n"
        f"**Not available:** {what}. `{path}` was not found; `{command}` "
        "produces it. No number is shown in its place.\n"
        "```\n"
    )


def synthetic_note(what: str) -> str:
    return SYNTHETIC_NOTE.replace("{what}", what)


def _f(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _cell(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _short(sha: Any) -> str:
    return f"`{str(sha)[:12]}`" if sha else "-"


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _read_json(path: Path) -> Any | None:
    """The parsed file, or None when it does not exist.

    A file that exists but is not JSON is an error: a report built on a
    truncated file would be wrong without saying so.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise EvidenceError(f"{path}: not valid JSON: {exc}") from exc


class EvidenceError(MlkitError):
    """An input exists but cannot be used; the message names it."""


# -- the book's table of contents ---------------------------------------------


def toc_files(book_dir: Path) -> set[str]:
    """Every ``file:`` entry of the book's ``_toc.yml`` (without suffix)."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text(encoding="utf-8"))
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"file", "root"} and isinstance(value, str):
                    found.add(re.sub(r"\.(md|ipynb)$", "", value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _page_exists(book_dir: Path, doc: str) -> bool:
    return any((book_dir / f"{doc}{suffix}").is_file() for suffix in (".ipynb", ".md"))


def doc_link(book_dir: Path, doc: str, toc: set[str]) -> str:
    """A ``{doc}`` link when the page is in the book, else the name as code."""
    if doc in toc and _page_exists(book_dir, doc):
        return f"{{doc}}`/{doc}`"
    return f"`{doc}` (not in this build of the book)"


# -- the data-flow diagram ----------------------------------------------------

_FLOW = (
    # (x, y, title, detail)
    (0.08, 0.72, "raw data", "public datasets\nor synthetic demo"),
    (0.29, 0.72, "01_preprocess", "manifest.parquet\ndataset_card.json"),
    (0.50, 0.72, "02_train", "model.safetensors\nmodel_card.json"),
    (0.71, 0.72, "03_evaluate", "evaluation_report.json\ngate.json"),
    (0.92, 0.72, "book", "executed notebooks\nthis report"),
    (0.29, 0.22, "image", "Dockerfile: gated model\ntag <git sha>-<model sha12>"),
    (0.56, 0.22, "Pulumi", "GKE cluster and the\nKubernetes objects"),
    (0.83, 0.22, "mlkit serve", "Deployment + HPA\n/v1/predict, /metrics"),
)
_ARROWS = ((0, 1), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7))


def draw_data_flow(path: Path) -> Path:
    """Draw the system's data flow (stages, artifacts, deployment) as a PNG.

    Drawn with matplotlib at build time, so the book needs no network and no
    system package to show it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    fig = Figure(figsize=(11, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(0, 1)
    ax.axis("off")
    width, height = 0.16, 0.3
    for index, (x, y, title, detail) in enumerate(_FLOW):
        colour = "#dbe9f6" if index < 5 else "#e3f1df"
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.01",
                facecolor=colour,
                edgecolor="#34495e",
            )
        )
        ax.text(x, y + 0.07, title, ha="center", va="center", weight="bold")
        ax.text(x, y - 0.05, detail, ha="center", va="center", fontsize=8)
    for start, end in _ARROWS:
        (x0, y0, *_), (x1, y1, *_) = _FLOW[start], _FLOW[end]
        if y0 == y1:
            tail, head = (x0 + width / 2, y0), (x1 - width / 2, y1)
        else:
            tail, head = (x0, y0 - height / 2), (x1, y1 + height / 2)
        ax.annotate("", xy=head, xytext=tail, arrowprops={"arrowstyle": "->"})
    ax.text(
        0.6,
        0.47,
        "gate.json: only a model above the macro-F1\n"
        "threshold is built into an image and deployed",
        ha="left",
        va="center",
        fontsize=8,
        style="italic",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# -- machine learning workflow ------------------------------------------------


def ml_workflow_fragment(
    summary: Mapping[str, Any] | None,
    card: Mapping[str, Any] | None,
    model_card: Mapping[str, Any] | None,
    report: Mapping[str, Any] | None,
    *,
    links: Mapping[str, str],
    workdir: str,
) -> str:
    """Preprocessing, training and evaluation as the last pipeline run did them."""
    if summary is None:
        return missing(
            "the pipeline's run summary", f"{workdir}/run_summary.json", "make pipeline"
        )
    synthetic = bool(summary.get("data", {}).get("synthetic"))
    rows = []
    for stage in summary.get("stages", []):
        outputs = ", ".join(
            f"`{Path(a['path']).name}` {_short(a['sha256'])}"
            for a in stage.get("artifacts", [])
        )
        doc = f"notebooks/{stage['name']}"
        rows.append([links.get(doc, f"`{doc}`"), _f(stage.get("seconds"), 1), outputs])
    parts = [
        synthetic_note("The counts and metrics in this section") if synthetic else None,
        f"Profile `{summary.get('profile')}`, run from {summary.get('started_at')} "
        f"to {summary.get('finished_at')}, on "
        + ("synthetic demo data." if synthetic else "the configured data root."),
        table(["stage (executed notebook)", "seconds", "outputs"], rows),
        "**Preprocessing.**",
    ]

    if card is None:
        parts.append(
            missing(
                "the dataset card",
                f"{workdir}/prepared/dataset_card.json",
                "make pipeline",
            )
        )
    else:
        counts = card.get("counts", {})
        split = counts.get("split", {})
        parts.append(
            f"{card.get('rows')} rows in the manifest (sha256 "
            f"{_short(card.get('manifest', {}).get('sha256'))}), "
            f"{len(card.get('labels', []))} labels; split "
            + ", ".join(f"{k} {v}" for k, v in split.items())
            + "."
        )
        if counts.get("dataset"):
            parts.append(table(["dataset", "rows"], sorted(counts["dataset"].items())))

    parts.append("**Training.**")
    if model_card is None:
        parts.append(
            missing(
                "the model card",
                f"{workdir}/train/model/model_card.json",
                "make pipeline",
            )
        )
    else:
        training = model_card.get("training", {})
        config = training.get("config", {})
        parts.append(
            f"{len(model_card.get('classes', []))} classes; best epoch "
            f"{training.get('epoch')} of at most {config.get('epochs')} (early "
            f"stopping after {config.get('early_stopping_patience')} epochs without "
            f"improvement); validation macro-F1 {_f(training.get('val_macro_f1'))}; "
            f"weights sha256 {_short(model_card.get('weights_sha256'))}; git commit "
            f"{_short(model_card.get('git_commit'))}."
        )

    parts.append("**Evaluation** (test split).")
    if report is None:
        parts.append(
            missing(
                "the evaluation report",
                f"{workdir}/evaluate/evaluation_report.json",
                "make pipeline",
            )
        )
    else:
        metrics = report.get("metrics", {})
        parts.append(
            f"macro-F1 {_f(metrics.get('macro_f1'))}, accuracy "
            f"{_f(metrics.get('accuracy'))}, expected calibration error "
            f"{_f(metrics.get('ece'))} on {metrics.get('n')} images"
            + (" (synthetic)." if report.get("synthetic") else ".")
        )
        ablations = report.get("ablations", {})
        if ablations:
            parts.append(
                table(
                    ["inputs", "macro-F1", "accuracy", "n"],
                    [
                        [name, _f(m.get("macro_f1")), _f(m.get("accuracy")), m.get("n")]
                        for name, m in ablations.items()
                    ],
                )
            )
    return blocks(*parts)


# -- the gate and the retraining policy ---------------------------------------


def gate_fragment(
    gate: Mapping[str, Any] | None,
    report: Mapping[str, Any] | None,
    *,
    workdir: str,
) -> str:
    """Threshold, measured macro-F1 and the gated model's sha256."""
    if gate is None:
        absent = missing(
            "the deployment gate's record",
            f"{workdir}/evaluate/gate.json",
            "make pipeline",
        )
        if report is None:
            return absent
        return blocks(
            absent,
            "An evaluation report exists (test macro-F1 "
            f"{_f(report.get('metrics', {}).get('macro_f1'))}) but no gate record: "
            "the gate failed or was not applied, so no model of this build may be "
            "deployed.",
        )
    sha = str(gate.get("model_sha256"))
    row = [
        gate.get("metric"),
        _f(gate.get("threshold")),
        _f(gate.get("measured")),
        "passed" if gate.get("passed") else "failed",
        f"`{sha}`",
        _short(gate.get("dataset_sha256")),
    ]
    return blocks(
        synthetic_note("The measured macro-F1 and the gated model")
        if gate.get("synthetic")
        else None,
        table(
            ["metric", "threshold", "measured", "result", "model sha256", "dataset"],
            [row],
        ),
        f"Recorded at {gate.get('created_at')}. An image of this model is tagged "
        f"`<git sha>-{sha[:12]}`; the deploy workflow checks that suffix, and the "
        "sha256 of the weights it ships, against this record before anything is "
        "applied.",
    )


def retraining_fragment(
    thresholds: Mapping[str, Any],
    training: Mapping[str, Mapping[str, Any]],
    gate: Mapping[str, Any] | None,
) -> str:
    """The retraining policy, with its numbers read from the config files.

    ``thresholds`` maps where a threshold is set (a profile, the deploy
    workflow's default) to its value; ``training`` maps a training config name
    to its ``train`` section.
    """
    lines = [
        "- **When.** Every merge to `main` retrains: the deploy workflow runs the "
        "`full` profile (training and evaluation on a Modal GPU). A new dataset "
        "release (a new manifest sha256) or a changed training config reaches "
        "production only this way; a manual run of the deploy workflow retrains "
        "too.",
        "- **Acceptance.** A new model replaces the deployed one only if its test "
        "macro-F1 is above the threshold ("
        + "; ".join(f"{where}: {_f(value, 2)}" for where, value in thresholds.items())
        + "). A failing gate writes no `gate.json`; without it nothing is built or "
        "deployed, and the running model stays.",
    ]
    if training:
        lines.append(
            "- **Training budget.** "
            + "; ".join(
                f"`{name}` config: at most {cfg.get('epochs')} epochs, early "
                f"stopping after {cfg.get('early_stopping_patience')} epochs "
                "without a better validation macro-F1"
                for name, cfg in training.items()
            )
            + "."
        )
    if gate is not None:
        lines.append(
            "- **Traceability.** The current gate record ties model "
            f"{_short(gate.get('model_sha256'))} to dataset "
            f"{_short(gate.get('dataset_sha256'))}; the image tag and the "
            "deployment's labels carry the model's sha256, so a rollback is a "
            "redeployment of an earlier gated tag."
        )
    return "\n".join(lines) + "\n"


# -- Kubernetes, Pulumi and scaling -------------------------------------------


def _object_facts(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec", {}) or {}
    kind = obj.get("kind")
    if kind == "Deployment":
        pod = spec.get("template", {}).get("spec", {})
        facts = []
        for container in pod.get("containers", []):
            resources = container.get("resources", {})
            facts.append(
                f"image `{container.get('image')}`; requests "
                f"{resources.get('requests')}, limits {resources.get('limits')}"
            )
        replicas = spec.get("replicas")
        facts.append(
            f"replicas {replicas}"
            if replicas is not None
            else "replicas set by the HPA"
        )
        grace = pod.get("terminationGracePeriodSeconds")
        if grace is not None:
            facts.append(f"termination grace {grace} s")
        return "; ".join(facts)
    if kind == "HorizontalPodAutoscaler":
        return f"{spec.get('minReplicas')} to {spec.get('maxReplicas')} replicas"
    if kind == "Service":
        ports = ", ".join(
            f"{p.get('port')}->{p.get('targetPort')}" for p in spec.get("ports", [])
        )
        return f"{spec.get('type', 'ClusterIP')}, ports {ports}"
    if kind == "PodDisruptionBudget":
        keys = ("minAvailable", "maxUnavailable")
        return ", ".join(f"{k} {spec[k]}" for k in keys if k in spec)
    return ""


def kubernetes_fragment(
    objects: Sequence[Mapping[str, Any]] | None,
    rendered_yaml: str | None,
    *,
    context: str,
    deploy_link: str,
) -> str:
    """The rendered objects: one table row each, then the YAML as applied.

    Without objects, ``context`` says why they are missing.
    """
    notebook = f"The deployment notebook: {deploy_link}."
    if objects is None:
        return blocks(
            f"```{{warning}}\n**Not available:** the Kubernetes objects. "
            f"{context}\n```",
            notebook,
        )
    rows = [
        [
            obj.get("kind"),
            obj.get("metadata", {}).get("name"),
            obj.get("metadata", {}).get("namespace", "-"),
            _object_facts(obj),
        ]
        for obj in objects
    ]
    return blocks(
        context,
        table(["kind", "name", "namespace", "key settings"], rows),
        notebook,
        f"````{{dropdown}} The {len(objects)} objects as YAML\n```yaml\n"
        + (rendered_yaml or "").strip("\n")
        + "\n```\n````",
    )


def _inputs_text(inputs: Any, limit: int = 140) -> str:
    if not isinstance(inputs, Mapping) or not inputs:
        return "-"
    text = "; ".join(
        f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(inputs.items())
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def infrastructure_fragment(
    preview: Mapping[str, Any] | None, *, path: str, stack: str
) -> str:
    """The resources the Pulumi program declares, from its mock preview JSON.

    The preview (``infra/mock_preview.py --json``) holds ``resources`` (each
    with ``type``, ``name`` and ``key_inputs``), and optionally ``outputs`` and
    ``placeholders`` (config values that a deployment sets and the preview
    had to invent).
    """
    if preview is None:
        return missing(
            f"the Pulumi mock preview of stack `{stack}`",
            path,
            f"python infra/mock_preview.py --stack {stack} --json {path}",
        )
    resources = preview.get("resources") if isinstance(preview, Mapping) else None
    if not isinstance(resources, list) or not all(
        isinstance(r, Mapping) and "type" in r and "name" in r for r in resources
    ):
        raise EvidenceError(
            f"{path}: expected an object whose 'resources' is a list of objects "
            "with 'type' and 'name'"
        )
    providers: dict[str, int] = defaultdict(int)
    for resource in resources:
        providers[str(resource["type"]).split(":")[0]] += 1
    rows = [
        [f"`{r['type']}`", r["name"], _inputs_text(r.get("key_inputs"))]
        for r in resources
    ]
    placeholders = preview.get("placeholders") or {}
    outputs = preview.get("outputs") or {}
    return blocks(
        f"Stack `{preview.get('stack', stack)}` declares {len(rows)} resources ("
        + ", ".join(f"{n} {p}" for p, n in sorted(providers.items()))
        + "), listed by a run of the program under Pulumi's mocks: no cloud "
        "account and no cluster were involved.",
        (
            "Config values that a deployment sets and this preview replaced with "
            "placeholders: "
            + ", ".join(f"`{k}` = `{v}`" for k, v in sorted(placeholders.items()))
            + "."
        )
        if placeholders
        else None,
        table(["type", "name", "key inputs"], rows),
        "Stack outputs:" if outputs else None,
        table(
            ["output", "value"],
            [
                [k, f"`{json.dumps(v, sort_keys=True)}`"]
                for k, v in sorted(outputs.items())
            ],
        )
        if outputs
        else None,
    )


def notebook_glue_keys(path: Path) -> set[str]:
    """Names glued (``myst_nb.glue``) in an executed notebook's outputs."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    keys = set()
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                keys.add(name)
    return keys


def scaling_fragment(book_dir: Path, toc: set[str]) -> str:
    """The scaling notebook's glued plots, pasted by myst-nb from its outputs.

    Pasting works with execution off because the glue data lies in the
    executed notebook's outputs; the notebook must be a page of the book.
    (myst-nb's ``glue:figure`` cannot paste from another page, so captions are
    written here.)
    """
    notebook = book_dir / f"{SCALING_NOTEBOOK}.ipynb"
    if SCALING_NOTEBOOK not in toc or not notebook.is_file():
        return missing(
            "the scaling demonstration (executed notebook 05, listed in _toc.yml)",
            _rel(notebook, book_dir.parent),
            "make report",
        )
    keys = notebook_glue_keys(notebook)
    absent = [k for k in (*SCALING_FIGURES, *SCALING_VALUES) if k not in keys]
    if absent:
        return (
            "```{warning}\n**Not available:** the executed scaling notebook glues "
            f"no {', '.join(f'`{k}`' for k in absent)}; re-run it with "
            "`make report`.\n```\n"
        )
    doc = f"{SCALING_NOTEBOOK}.ipynb"
    captions = {
        "scaling_timeline": "Replicas, request rate and latency over time: quiet, "
        "under load, scaled up, and back.",
        "capacity_curve": "One server's throughput, latency and CPU against the "
        "number of concurrent requests: the capacity curve that calibrates the "
        "simulator.",
    }
    parts = [f"From the executed notebook {{doc}}`/{SCALING_NOTEBOOK}`."]
    for key in SCALING_FIGURES:
        parts += [f"```{{glue}} {key}\n:doc: {doc}\n```", f"*{captions[key]}*"]
    parts += ["Autoscaler settings:", f"```{{glue}} hpa_settings\n:doc: {doc}\n```"]
    return blocks(*parts)


# -- CI/CD and automated deployment -------------------------------------------


def makefile_targets(makefile: str) -> dict[str, str]:
    """Target -> its ``## help`` text, from the Makefile."""
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^([a-z][\w-]*):[^\n]*?## (.+)$", makefile, re.M)
    }


def make_targets(command: str) -> list[str]:
    """The make targets a shell command runs (``make test`` -> ``["test"]``)."""
    targets = []
    for line in command.splitlines():
        for match in re.finditer(r"(?:^|[;&|]\s*)\s*make((?:[ \t]+[^\s;&|]+)+)", line):
            targets += [
                word
                for word in match.group(1).split()
                if not word.startswith("-") and "=" not in word
            ]
    return targets


def workflow_triggers(workflow: Mapping[Any, Any]) -> list[str]:
    """The events that start a workflow, with branches or dispatch inputs."""
    # YAML 1.1 reads the key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True, {}))
    if isinstance(on, str):
        return [on]
    if isinstance(on, list):
        return [str(event) for event in on]
    described = []
    for event, spec in (on or {}).items():
        detail = ""
        if isinstance(spec, Mapping) and spec.get("branches"):
            detail = f" ({', '.join(spec['branches'])})"
        if isinstance(spec, Mapping) and spec.get("inputs"):
            detail = f" (inputs: {', '.join(spec['inputs'])})"
        described.append(f"{event}{detail}")
    return described


def _step_label(step: Mapping[str, Any]) -> str:
    if step.get("name"):
        return str(step["name"])
    if step.get("uses"):
        return str(step["uses"]).split("@")[0]
    return str(step.get("run", "")).strip().splitlines()[0]


def _needs(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def cicd_fragment(
    workflows: Mapping[str, Mapping[Any, Any]], help_texts: Mapping[str, str]
) -> str:
    """Each workflow's jobs: what they run and which jobs wait for them."""
    parts: list[str | None] = []
    for path, workflow in workflows.items():
        jobs = workflow.get("jobs", {})
        waiting: dict[str, list[str]] = defaultdict(list)
        for name, job in jobs.items():
            for need in _needs(job):
                waiting[need].append(name)
        rows = []
        for name, job in jobs.items():
            runs = []
            for step in job.get("steps", []):
                targets = make_targets(str(step.get("run", "")))
                if targets:
                    runs += [
                        f"`make {t}`: {help_texts.get(t, 'not a Makefile target')}"
                        for t in targets
                    ]
                elif not str(step.get("uses", "")).startswith("actions/checkout"):
                    runs.append(_step_label(step))
            rows.append(
                [
                    f"`{name}`",
                    "; ".join(runs),
                    ", ".join(f"`{w}`" for w in waiting.get(name, [])) or "-",
                ]
            )
        parts += [
            f"**{workflow.get('name', path)}** (`{path}`), on "
            + ", ".join(workflow_triggers(workflow))
            + ".",
            table(["job", "steps (any failing step fails the job)", "gates"], rows),
        ]
    return blocks(*parts)


def deployment_fragment(workflow: Mapping[Any, Any] | None, *, path: str) -> str:
    """What happens on a merge to main, from the deploy workflow's jobs."""
    if workflow is None:
        return missing("the deploy workflow", path, "git checkout")
    concurrency = workflow.get("concurrency", {})
    cancel = str(concurrency.get("cancel-in-progress")).lower()
    lines = []
    for number, (name, job) in enumerate(workflow.get("jobs", {}).items(), 1):
        environment = job.get("environment")
        if isinstance(environment, Mapping):
            environment = environment.get("name")
        needs = _needs(job)
        header = f"{number}. **{job.get('name', name)}** (`{name}`"
        header += f"; after {', '.join(needs)}" if needs else ""
        header += f"; environment `{environment}`" if environment else ""
        header += ")"
        outputs = job.get("outputs", {})
        if outputs:
            header += "; passes on " + ", ".join(f"`{k}`" for k in outputs)
        lines.append(header)
        lines += [f"   - {_step_label(step)}" for step in job.get("steps", [])]
    return blocks(
        "Triggered by " + ", ".join(workflow_triggers(workflow)) + ". Concurrency "
        f"group `{concurrency.get('group')}`, cancel-in-progress `{cancel}`: a "
        "deployment waits for the one before it and is never cancelled half-way.",
        "\n".join(lines),
    )


# -- tests and coverage -------------------------------------------------------


def collect_test_ids(repo_root: Path, paths: Sequence[str] = ("tests",)) -> list[str]:
    """Node ids of the test suite, as ``pytest --collect-only -q`` lists them.

    Raises EvidenceError when collection fails: the report must not present a
    partial list as the suite.
    """
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q"]
    result = subprocess.run(
        [*command, "-p", "no:cacheprovider", *paths],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise EvidenceError(
            f"pytest --collect-only failed with exit code {result.returncode}:\n{tail}"
        )
    return [line for line in result.stdout.splitlines() if "::" in line]


def _group_by_file(test_ids: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for node in test_ids:
        file, _, name = node.partition("::")
        grouped[file].append(name)
    return dict(sorted(grouped.items()))


def unit_tests_fragment(test_ids: Sequence[str], repo_root: Path) -> str:
    """Tests per module of the package (``tests/unit`` mirrors ``mlkit``)."""
    grouped = {
        file: names
        for file, names in _group_by_file(test_ids).items()
        if file.startswith("tests/unit/")
    }
    rows = []
    for file, names in grouped.items():
        relative = Path(file).relative_to("tests/unit")
        target = Path("mlkit") / relative.parent / relative.name.removeprefix("test_")
        shown = f"`{target}`" if (repo_root / target).is_file() else "-"
        rows.append([f"`{file}`", shown, len(names)])
    total = sum(len(n) for n in grouped.values())
    return blocks(
        f"{total} unit tests in {len(grouped)} files, as pytest collects them "
        "(each parametrized case counts once):",
        table(["test file", "module under test", "tests"], rows),
    )


def _docstring(path: Path) -> str:
    try:
        module = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return ""
    return (ast.get_docstring(module) or "").split("\n\n")[0].replace("\n", " ")


def integration_tests_fragment(test_ids: Sequence[str], repo_root: Path) -> str:
    """Integration and notebook tests, one list per file with its purpose."""
    parts = []
    grouped = _group_by_file(test_ids)
    for folder in ("tests/integration/", "tests/notebooks/"):
        files = {f: n for f, n in grouped.items() if f.startswith(folder)}
        if not files:
            continue
        count = sum(len(n) for n in files.values())
        lines = []
        for file, names in files.items():
            doc = _docstring(repo_root / file)
            lines.append(f"- `{file}`" + (f": {doc}" if doc else ""))
            lines += [f"  - {name.replace('_', ' ')}" for name in names]
        parts += [f"**`{folder}`** ({count} tests)", "\n".join(lines)]
    return blocks(*parts) if parts else "No integration tests were collected.\n"


def coverage_floor(pyproject: Path) -> float | None:
    """``fail_under`` of ``[tool.coverage.report]``, the floor make test enforces."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return data.get("tool", {}).get("coverage", {}).get("report", {}).get("fail_under")


def coverage_fragment(
    coverage: Mapping[str, Any] | None, *, floor: float | None, path: str
) -> str:
    """Line coverage per module and the functions no test executes."""
    if coverage is None:
        return missing("coverage data", path, "make test")
    totals = coverage.get("totals", {})
    meta = coverage.get("meta", {})
    percent = totals.get("percent_covered")
    verdict = ""
    if floor is not None and isinstance(percent, int | float):
        verdict = (
            " (at or above the floor)" if percent >= floor else " (BELOW the floor)"
        )
    rows, uncovered = [], []
    for file, data in sorted(coverage.get("files", {}).items()):
        summary = data.get("summary", {})
        rows.append(
            [
                f"`{file}`",
                summary.get("num_statements"),
                summary.get("missing_lines"),
                _f(summary.get("percent_covered"), 1),
            ]
        )
        for name, function in data.get("functions", {}).items():
            counts = function.get("summary", {})
            if (
                name
                and counts.get("num_statements", 0)
                and not counts.get("covered_lines")
            ):
                uncovered.append(f"- `{file}`: `{name}`")
    return blocks(
        f"Line coverage of the package: **{_f(percent, 1)}%** of "
        f"{totals.get('num_statements')} statements{verdict}; `make test` fails "
        f"under {_f(floor, 0)}% (`fail_under` in pyproject.toml). Measured at "
        f"{str(meta.get('timestamp', ''))[:19]} by coverage.py {meta.get('version')}, "
        "code run inside the notebooks' kernels included.",
        table(["module", "statements", "missed", "covered %"], rows),
        f"Functions that no test executes ({len(uncovered)}):",
        "\n".join(uncovered) or "None.",
    )


# -- provenance ----------------------------------------------------------------


def provenance_fragment(inputs: Mapping[str, Path], root: Path) -> str:
    rows = []
    for what, path in inputs.items():
        if path.is_file():
            rows.append([what, f"`{_rel(path, root)}`", _short(sha256_file(path))])
        else:
            rows.append([what, f"`{_rel(path, root)}`", "missing"])
    return table(["input", "file", "sha256"], rows)


# -- putting it together -------------------------------------------------------


def _kubernetes_objects(
    model_dir: Path, gate_file: Path, stack: str, repo_root: Path
) -> tuple[list[dict[str, Any]] | None, str | None, str]:
    """Render the stack's objects for the gated model, as a deployment would.

    Returns (objects, YAML, what they were rendered from), or (None, None,
    why not).
    """
    from mlkit.deploy import (
        build_objects,
        check_gated_model,
        gated_image_tag,
        git_head,
        load_deploy_config,
        render_yaml,
    )

    if not gate_file.is_file():
        return (
            None,
            None,
            (
                "They are rendered for the gated model, and "
                f"`{_rel(gate_file, repo_root)}` does not exist: `make pipeline` "
                "writes it when the model passes."
            ),
        )
    try:
        sha = check_gated_model(model_dir, gate_file)
    except MlkitError as exc:
        log.warning("no Kubernetes objects in the report: %s", exc)
        return None, None, f"The gated model cannot be used: {exc}"
    git_sha = git_head(repo_root)
    if git_sha is None:
        return (
            None,
            None,
            (
                "The image tag needs the commit (`<git sha>-<model sha12>`), and "
                f"`{repo_root}` is not a git checkout."
            ),
        )
    image = f"{PLACEHOLDER_REPOSITORY}:{gated_image_tag(git_sha, sha)}"
    objects = build_objects(load_deploy_config(stack, image=image, model_sha256=sha))
    context = (
        f"Rendered by `mlkit.deploy.build_objects` from the packaged `{stack}` "
        f"config for the gated model {_short(sha)}, in the order they are applied "
        "(the same call as `mlkit deploy render`). The image repository "
        f"`{PLACEHOLDER_REPOSITORY}` stands in for the registry that the deploy "
        "workflow pushes to; the tag is the one it would push for this commit."
    )
    return objects, render_yaml(objects), context


def _thresholds(repo_root: Path) -> dict[str, Any]:
    from mlkit.pipeline.runner import load_profile, profile_names

    found: dict[str, Any] = {}
    for name in profile_names():
        stage = load_profile(name).stages.get("03_evaluate", {})
        if "min_macro_f1" in stage:
            found[f"`{name}` profile"] = stage["min_macro_f1"]
    deploy = repo_root / ".github" / "workflows" / "deploy.yml"
    if deploy.is_file():
        match = re.search(r"MIN_MODEL_ACCURACY \|\| '([0-9.]+)'", deploy.read_text())
        if match:
            found["deploy workflow default"] = float(match.group(1))
    return found


def _training_configs() -> dict[str, dict[str, Any]]:
    from mlkit._config import packaged_names, read_config

    return {
        name: read_config(
            name, package="mlkit.train", folder="configs", what="training config"
        )[0].get("train", {})
        for name in packaged_names("mlkit.train", "configs")
    }


def write_evidence(
    sources: EvidenceSources,
    out_dir: str | Path,
    *,
    test_ids: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write every fragment (and the data-flow diagram) into ``out_dir``.

    ``test_ids`` skips running pytest's collection (tests pass a list). Returns
    fragment name -> path. Raises EvidenceError for an input that exists but
    is unusable (invalid JSON, a failing test collection).
    """
    out_dir = Path(out_dir)
    root = sources.repo_root
    work = sources.workdir
    shown_work = _rel(work, root)
    book = sources.book_dir
    toc = toc_files(book)
    links = {
        doc: doc_link(book, doc, toc) for doc in (*STAGE_NOTEBOOKS, DEPLOY_NOTEBOOK)
    }

    # Inputs produced by the pipeline and by `make test`.
    paths = {
        "run summary": work / "run_summary.json",
        "dataset card": work / "prepared" / "dataset_card.json",
        "model card": work / "train" / "model" / "model_card.json",
        "evaluation report": work / "evaluate" / "evaluation_report.json",
        "gate record": work / "evaluate" / "gate.json",
        "coverage": sources.coverage_file,
        "Pulumi mock preview": sources.preview_file,
    }
    summary, card, model_card, report, gate, coverage, preview = (
        _read_json(p) for p in paths.values()
    )
    if gate is not None:
        from mlkit.evaluate.gate import read_gate

        gate = read_gate(paths["gate record"])

    # Repository files: workflows, Makefile, tests.
    workflows = {
        _rel(p, root): yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted(root.glob(".github/workflows/*.yml"))
    }
    help_texts = makefile_targets(root.joinpath("Makefile").read_text(encoding="utf-8"))
    ids = list(test_ids) if test_ids is not None else collect_test_ids(root)
    objects, rendered, k8s_context = _kubernetes_objects(
        work / "train" / "model", paths["gate record"], sources.stack, root
    )

    fragments = {
        "ml_workflow": ml_workflow_fragment(
            summary, card, model_card, report, links=links, workdir=shown_work
        ),
        "gate": gate_fragment(gate, report, workdir=shown_work),
        "retraining": retraining_fragment(_thresholds(root), _training_configs(), gate),
        "kubernetes": kubernetes_fragment(
            objects, rendered, context=k8s_context, deploy_link=links[DEPLOY_NOTEBOOK]
        ),
        "scaling": scaling_fragment(book, toc),
        "infrastructure": infrastructure_fragment(
            preview, path=_rel(paths["Pulumi mock preview"], root), stack=sources.stack
        ),
        "cicd": cicd_fragment(workflows, help_texts),
        "automated_deployment": deployment_fragment(
            workflows.get(".github/workflows/deploy.yml"),
            path=".github/workflows/deploy.yml",
        ),
        "unit_tests": unit_tests_fragment(ids, root),
        "integration_tests": integration_tests_fragment(ids, root),
        "coverage": coverage_fragment(
            coverage,
            floor=coverage_floor(root / "pyproject.toml"),
            path=_rel(paths["coverage"], root),
        ),
        "provenance": provenance_fragment(paths, root),
    }

    written = {"data_flow": draw_data_flow(out_dir / "data_flow.png")}
    for name, text in fragments.items():
        path = out_dir / f"{name}.md"
        with atomic_open(path) as fh:
            fh.write(text)
        written[name] = path
    log.info(
        "wrote %d evidence fragments to %s (%d inputs missing)",
        len(written),
        out_dir,
        sum(not p.is_file() for p in paths.values()),
    )
    return written
