import json

import pytest
import yaml
from click.testing import CliRunner

from mlkit.cli import cli
from tests.unit.deploy.test_gate import GIT_SHA, make_gate, make_gated_model

REPO = "europe-docker.pkg.dev/proj/mlkit/serve"


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def gated(tmp_path):
    return make_gated_model(tmp_path)


def render(runner, model_dir, gate_file, out, *extra):
    return runner.invoke(
        cli,
        [
            "deploy",
            "render",
            "--model-dir",
            str(model_dir),
            "--gate-file",
            str(gate_file),
            "--out",
            str(out),
            *extra,
        ],
    )


def load(out, name):
    return yaml.safe_load((out / name).read_text())


def test_render_writes_the_objects_and_a_table(runner, gated, tmp_path):
    model_dir, gate_file, sha = gated
    out = tmp_path / "k8s"
    result = render(
        runner, model_dir, gate_file, out, "--image", REPO, "--git-sha", GIT_SHA
    )
    assert result.exit_code == 0, result.output
    image = f"{REPO}:{GIT_SHA}-{sha[:12]}"
    assert f"image {image}" in result.stdout
    assert "Deployment" in result.stdout and "mlkit-serve" in result.stdout
    assert len(list(out.glob("*.yaml"))) == 8
    deployment = load(out, "60-deployment.yaml")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert deployment["metadata"]["namespace"] == "mlkit-dev"  # the dev default
    template = deployment["spec"]["template"]["metadata"]
    assert template["annotations"]["mlkit/model-sha256"] == sha


def test_render_prod_with_overrides(runner, gated, tmp_path):
    model_dir, gate_file, sha = gated
    out = tmp_path / "k8s"
    result = render(
        runner,
        model_dir,
        gate_file,
        out,
        "--config",
        "prod",
        "--image",
        f"{REPO}:v1-{sha[:12]}",
        "--set",
        "max_replicas=8",
        "--set",
        "resources.limits.memory=3Gi",
    )
    assert result.exit_code == 0, result.output
    hpa = load(out, "70-horizontalpodautoscaler.yaml")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    container = load(out, "60-deployment.yaml")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["limits"]["memory"] == "3Gi"
    assert container["image"] == f"{REPO}:v1-{sha[:12]}"


def test_render_takes_the_git_sha_from_the_checkout(
    runner, gated, tmp_path, monkeypatch
):
    model_dir, gate_file, sha = gated
    monkeypatch.setattr("mlkit.deploy.git_head", lambda: GIT_SHA)
    result = render(runner, model_dir, gate_file, tmp_path / "k8s", "--image", REPO)
    assert result.exit_code == 0, result.output
    assert f"image {REPO}:{GIT_SHA}-{sha[:12]}" in result.stdout


def test_render_without_tag_or_git_needs_git_sha(runner, gated, tmp_path, monkeypatch):
    model_dir, gate_file, _ = gated
    monkeypatch.setattr("mlkit.deploy.git_head", lambda: None)
    out = tmp_path / "k8s"
    result = render(runner, model_dir, gate_file, out, "--image", REPO)
    assert result.exit_code == 2
    assert "give --git-sha" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("image", "extra", "message"),
    [
        (f"{REPO}:latest", (), "the tag 'latest' is refused"),
        (f"{REPO}:v1.2", (), "does not carry the model sha"),
        (REPO, ("--set", "min_replicas=9"), "min_replicas 9 is above max_replicas 3"),
        (
            REPO,
            ("--set", "target_cpu_utilization=150"),
            "target_cpu_utilization: Input should be less than or equal to 100",
        ),
        (
            REPO,
            ("--set", "resources.requests.cpu=4"),
            "requests.cpu 4 is above limits.cpu 2",
        ),
        (REPO, ("--config", "staging"), "unknown deploy config 'staging'"),
        (REPO, ("--set", "oops"), "expected KEY=VALUE"),
    ],
)
def test_render_refuses_bad_input_before_writing(
    runner, gated, tmp_path, image, extra, message
):
    model_dir, gate_file, _ = gated
    out = tmp_path / "k8s"
    result = render(
        runner,
        model_dir,
        gate_file,
        out,
        "--image",
        image,
        "--git-sha",
        GIT_SHA,
        *extra,
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not out.exists()


def test_render_refuses_an_ungated_model(runner, gated, tmp_path):
    model_dir, _, _ = gated
    other_gate = make_gate(tmp_path / "other.json", "9" * 64)
    out = tmp_path / "k8s"
    result = render(
        runner, model_dir, other_gate, out, "--image", REPO, "--git-sha", GIT_SHA
    )
    assert result.exit_code == 1
    assert "the gate file is for another model" in result.output
    assert not out.exists()

    failed = tmp_path / "failed.json"
    record = json.loads((tmp_path / "gate.json").read_text())
    failed.write_text(json.dumps({**record, "passed": False}))
    result = render(
        runner, model_dir, failed, out, "--image", REPO, "--git-sha", GIT_SHA
    )
    assert result.exit_code == 1 and "does not record a pass" in result.output
    assert not out.exists()


def test_render_refuses_a_pickle_in_the_model_dir(runner, gated, tmp_path):
    model_dir, gate_file, _ = gated
    (model_dir / "extra.pkl").write_bytes(b"\x80")
    out = tmp_path / "k8s"
    result = render(
        runner, model_dir, gate_file, out, "--image", REPO, "--git-sha", GIT_SHA
    )
    assert result.exit_code == 1 and "pickle-like" in result.output
    assert not out.exists()


@pytest.mark.parametrize("key", ["image", "model_sha256"])
def test_render_refuses_setting_what_the_gate_decides(runner, gated, tmp_path, key):
    model_dir, gate_file, _ = gated
    out = tmp_path / "k8s"
    result = render(
        runner, model_dir, gate_file, out, "--image", REPO, "--set", f"{key}=x"
    )
    assert result.exit_code == 2
    assert f"{key} comes from" in result.output
    assert not out.exists()
