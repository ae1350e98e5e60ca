"""Checks of the container definition (no Docker engine here: the files are read).

The Dockerfile and .dockerignore are parsed, and what they say is compared with
what the tests run and what the Kubernetes objects expect: the entrypoint, the
user, the port, the environment the server reads, the torch release.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

from mlkit.serve.config import env_settings, load_serve_config
from mlkit.serve.process import SERVE_COMMAND

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        logical.append(current + stripped)
        current = ""
    pairs = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in pairs:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


@pytest.fixture(scope="module")
def dockerfile():
    return instructions((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(dockerfile):
    return stages(dockerfile)[-1]


def values(stage, keyword):
    return [rest for kw, rest in stage if kw == keyword]


def env_of(stage) -> dict[str, str]:
    env = {}
    for rest in values(stage, "ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_parser_reads_continuations():
    pairs = instructions("FROM a AS b\n# c\nRUN x \\\n  && y\nUSER 1\n")
    assert pairs == [("FROM", "a AS b"), ("RUN", "x && y"), ("USER", "1")]


def test_multi_stage_slim_base(dockerfile):
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    arg_lines = [rest for kw, rest in dockerfile if kw == "ARG"]
    base = next(a for a in arg_lines if a.startswith("PYTHON_IMAGE="))
    assert "slim" in base
    assert values(all_stages[-1], "FROM")[0].startswith("${PYTHON_IMAGE} AS runtime")


def test_final_stage_runs_as_a_numeric_non_root_user(final):
    users = values(final, "USER")
    assert users, "the final stage must set USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0
    assert group.isdigit() and int(group) != 0
    from mlkit.deploy.objects import RUN_AS_ID

    assert int(user) == RUN_AS_ID == int(group)


def test_entrypoint_is_the_command_the_tests_start(final):
    entrypoint = json.loads(values(final, "ENTRYPOINT")[-1])
    assert entrypoint == list(SERVE_COMMAND)
    assert not values(final, "CMD")


def test_no_build_tools_in_the_final_image(final):
    runs = " ".join(values(final, "RUN"))
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "pip install", "curl"):
        assert tool not in runs


def test_healthcheck_probes_the_liveness_route_on_the_exposed_port(final):
    check = values(final, "HEALTHCHECK")[-1]
    port = values(final, "EXPOSE")[-1]
    assert f"127.0.0.1:{port}/healthz" in check
    assert env_of(final)["MLKIT_SERVE_PORT"] == port


def test_environment_is_valid_serve_settings(final):
    env = env_of(final)
    settings = {k: v for k, v in env.items() if k.startswith("MLKIT_SERVE_")}
    # The sha comes from a build argument; a real one is substituted here.
    settings["MLKIT_SERVE_EXPECTED_MODEL_SHA256"] = "ab" * 32
    config = load_serve_config(environ=settings)
    assert config.host == "0.0.0.0"
    assert str(config.model_dir) == "/models/model"
    assert env_settings(settings)  # no unknown MLKIT_SERVE_* names
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HOME"] == "/tmp"


def test_model_is_copied_by_digest(final):
    copies = values(final, "COPY")
    assert any(c.split()[-1] == "/models/model" for c in copies)
    runs = " ".join(values(final, "RUN"))
    assert "sha256sum -c" in runs
    assert "${MODEL_SHA256}" in runs
    assert "MLKIT_SERVE_EXPECTED_MODEL_SHA256=${MODEL_SHA256}" in " ".join(
        values(final, "ENV")
    )


def test_torch_release_matches_make_setup(dockerfile):
    makefile = (ROOT / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.MULTILINE).group(1)
    runs = " ".join(rest for kw, rest in dockerfile if kw == "RUN")
    assert spec in runs
    assert "download.pytorch.org/whl/cpu" in runs


def test_deployment_matches_the_image(final):
    from mlkit.deploy import build_objects

    objects = build_objects(
        {
            "image": "registry.example/mlkit-serve:abc123-" + "ab" * 6,
            "model_sha256": "ab" * 32,
        }
    )
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == int(values(final, "EXPOSE")[-1])
    assert "command" not in container  # the image's ENTRYPOINT runs


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            result = not negate
    return result


def test_dockerignore_sends_only_what_the_image_needs():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (
        "pyproject.toml",
        "README.md",
        "mlkit/serve/app.py",
        "build/train/model/model.safetensors",
        "build/train/model/model_card.json",
        "release/train/model/model.safetensors",
    ):
        assert not ignored(needed, patterns), needed
    for unwanted in (
        ".git/config",
        ".venv/bin/python",
        "data/raw/x.jpg",
        "build/prepared/manifest.parquet",
        "tests/conftest.py",
        "notebooks/01_preprocess.ipynb",
        ".env",
        "build/train/model/weights.pkl",
        "mlkit/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignored(unwanted, patterns), unwanted
