import subprocess
import sys
from decimal import Decimal

import pytest

from mlkit.deploy.config import (
    DeployConfig,
    deploy_config_names,
    load_deploy_config,
    merge_settings,
    parse_deploy_config,
    parse_image_reference,
    parse_overrides,
    parse_quantity,
)
from mlkit.errors import ConfigError

MODEL_SHA = "0123456789ab" + "c" * 52
IMAGE = f"europe-docker.pkg.dev/proj/mlkit/serve:deadbee-{MODEL_SHA[:12]}"


def config(**fields):
    return parse_deploy_config({"image": IMAGE, "model_sha256": MODEL_SHA, **fields})


def test_defaults_follow_the_contract():
    c = config()
    assert (c.name, c.namespace, c.port) == ("mlkit-serve", "mlkit", 8080)
    assert (c.min_replicas, c.max_replicas, c.target_cpu_utilization) == (1, 5, 60)
    assert (c.resources.requests.cpu, c.resources.requests.memory) == ("1", "1Gi")
    assert (c.resources.limits.cpu, c.resources.limits.memory) == ("2", "2Gi")
    assert (c.pre_stop_sleep_s, c.termination_grace_period_s) == (5, 40)
    assert c.serve.drain_timeout_s == 20
    assert c.pdb_min_available == 1 and c.service_type == "ClusterIP"
    up, down = c.behavior.scale_up, c.behavior.scale_down
    assert up.stabilization_window_s == 0 and up.select_policy == "Max"
    assert {(p.type, p.value, p.period_s) for p in up.policies} == {
        ("Pods", 4, 15),
        ("Percent", 100, 15),
    }
    assert down.stabilization_window_s == 300
    assert [(p.type, p.value, p.period_s) for p in down.policies] == [
        ("Percent", 100, 15)
    ]
    assert c.image.tag == f"deadbee-{MODEL_SHA[:12]}"
    assert c.model_sha_short == MODEL_SHA[:12]
    assert c.service_account_name == "mlkit-serve"


def test_threads_follow_the_cpu_limit_unless_set():
    # One single-threaded model worker per CPU of the limit, rounded up.
    assert (config().model_workers, config().torch_threads) == (2, 1)
    wide = config(resources={"limits": {"cpu": "2500m", "memory": "2Gi"}})
    assert (wide.cpus, wide.model_workers, wide.torch_threads) == (3, 3, 1)
    one = config(serve={"model_workers": 1})
    assert (one.model_workers, one.torch_threads) == (1, 2)
    assert config(serve={"torch_threads": 4}).torch_threads == 4


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(1024**3)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1.5G", Decimal("1.5e9")),
        ("1e3", Decimal(1000)),
        ("100k", Decimal(100_000)),
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1 Gi", "1GB", "-1", "abc", "1.2.3", "Gi"])
def test_parse_quantity_refuses_garbage(text):
    with pytest.raises(ConfigError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("repo", ("repo", None, None)),
        ("repo:v1", ("repo", "v1", None)),
        ("localhost:5000/a/b", ("localhost:5000/a/b", None, None)),
        ("localhost:5000/a/b:t", ("localhost:5000/a/b", "t", None)),
        ("r/a@sha256:" + "f" * 64, ("r/a", None, "sha256:" + "f" * 64)),
        ("r/a:t@sha256:" + "f" * 64, ("r/a", "t", "sha256:" + "f" * 64)),
    ],
)
def test_parse_image_reference(reference, parts):
    result = parse_image_reference(reference)
    assert (result["repository"], result["tag"], result["digest"]) == parts


def test_image_reference_round_trips():
    assert config().image.reference == IMAGE
    digest = "sha256:" + "f" * 64
    assert config(image=f"r.io/a/b@{digest}").image.reference == f"r.io/a/b@{digest}"


def test_a_digest_pins_the_image_without_the_model_sha_in_the_tag():
    c = config(
        image={"repository": "r.io/a", "tag": "v1", "digest": "sha256:" + "e" * 64}
    )
    assert c.image.reference == "r.io/a:v1@sha256:" + "e" * 64


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"min_replicas": 6, "max_replicas": 5},
            "min_replicas 6 is above max_replicas 5",
        ),
        (
            {"min_replicas": 0},
            "min_replicas: Input should be greater than or equal to 1",
        ),
        ({"target_cpu_utilization": 0}, "target_cpu_utilization"),
        ({"target_cpu_utilization": 101}, "target_cpu_utilization"),
        (
            {"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}},
            "requests.cpu 3 is above limits.cpu 2",
        ),
        (
            {"resources": {"requests": {"cpu": "1", "memory": "3Gi"}}},
            "requests.memory 3Gi is above limits.memory 2Gi",
        ),
        (
            {"resources": {"limits": {"cpu": "2", "memory": "lots"}}},
            "resources.limits.memory: not a Kubernetes quantity",
        ),
        (
            {"resources": {"limits": {"cpu": "0", "memory": "2Gi"}}},
            "quantity must be positive",
        ),
        ({"image": "r.io/a/b:latest"}, "the tag 'latest' is refused"),
        ({"image": "r.io/a/b:LATEST"}, "the tag 'latest' is refused"),
        ({"image": "r.io/a/b"}, "has no tag and no digest"),
        ({"image": "r.io/a/b:-x"}, "not an image tag: '-x'"),
        ({"image": "r.io/a/b:v1.0"}, f"does not carry the model sha {MODEL_SHA[:12]}"),
        ({"image": "R.io/UPPER/b:x"}, "not an image repository"),
        ({"image": "r.io/a@sha256:abc"}, "expected sha256:<64 hex>"),
        ({"model_sha256": "abc"}, "model_sha256: expected 64 lowercase hex"),
        ({"name": "Mlkit_Serve"}, "is not a valid name"),
        (
            {"termination_grace_period_s": 25},
            "termination_grace_period_s 25 must exceed pre_stop_sleep_s + "
            "serve.drain_timeout_s = 25",
        ),
        ({"pdb_min_available": 2}, "pdb_min_available 2 is above min_replicas 1"),
        ({"replicas": 3}, "replicas: unknown key"),
        ({"service_type": "NodePort"}, "service_type"),
        ({"service_type": "LoadBalancer"}, "needs network_policy.allow_cidrs"),
        ({"network_policy": {"allow_cidrs": ["10.0.0.0/33"]}}, "not a CIDR"),
        ({"network_policy": {"allow_from": [{}]}}, "a peer needs namespace_labels"),
        (
            {"network_policy": {"allow_from": [{"pod_labels": {"a b": "x"}}]}},
            "not a valid Kubernetes label key",
        ),
        (
            {"network_policy": {"allow_from": [{"pod_labels": {"app": "-x"}}]}},
            "not a valid Kubernetes label value",
        ),
        (
            {"service_account": {"gcp_service_account": "someone@example.com"}},
            "expected NAME@PROJECT.iam.gserviceaccount.com",
        ),
        (
            {"behavior": {"scale_up": {"policies": []}}},
            "behavior.scale_up.policies",
        ),
        ({"tmp_size_limit": True}, "expected a Kubernetes quantity"),
        ({"serve": {"max_upload_bytes": 10}}, "serve.max_upload_bytes"),
        ({"serve": {"max_batch_size": 1000}}, "serve.max_batch_size"),
        ({"serve": {"extra": {"Bad-Name": 1}}}, "is not a server setting name"),
        ({"serve": {"extra": {"port": 1}}}, "'port' is set by its own key"),
        ({"serve": {"extra": {"max_queue": 1}}}, "'max_queue' is set by its own key"),
    ],
)
def test_invalid_configs_name_the_problem(fields, message):
    with pytest.raises(ConfigError, match="invalid deploy config") as info:
        config(**fields)
    assert message in str(info.value)


def test_a_missing_image_is_named():
    with pytest.raises(ConfigError, match="image: Field required"):
        parse_deploy_config({"model_sha256": MODEL_SHA})


def test_every_inconsistency_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        config(min_replicas=6, termination_grace_period_s=10, image="r/a:v1")
    message = str(info.value)
    assert "min_replicas 6" in message
    assert "termination_grace_period_s 10" in message
    assert "does not carry the model sha" in message


def test_load_balancer_with_cidrs_is_accepted():
    c = config(
        service_type="LoadBalancer", network_policy={"allow_cidrs": ["0.0.0.0/0"]}
    )
    assert c.network_policy.allow_cidrs == ("0.0.0.0/0",)


def test_quantities_from_yaml_numbers_become_strings():
    c = config(resources={"requests": {"cpu": 0.5, "memory": "1Gi"}})
    assert c.resources.requests.cpu == "0.5"


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_packaged_configs_load_with_image_and_model(name):
    assert name in deploy_config_names()
    c = load_deploy_config(name, image=IMAGE, model_sha256=MODEL_SHA)
    assert c.min_replicas >= 1 and c.pdb_min_available <= c.min_replicas


def test_prod_keeps_a_pod_through_evictions():
    c = load_deploy_config("prod", image=IMAGE, model_sha256=MODEL_SHA)
    assert c.min_replicas > c.pdb_min_available >= 1


def test_overrides_merge_into_nested_settings():
    c = load_deploy_config(
        "dev",
        image=IMAGE,
        model_sha256=MODEL_SHA,
        resources={"limits": {"memory": "3Gi"}},
        max_replicas=7,
    )
    assert c.resources.limits.memory == "3Gi"
    assert c.resources.limits.cpu == "2"  # kept from the file
    assert c.max_replicas == 7


def test_load_from_a_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"image: {IMAGE}\nmodel_sha256: {'a' * 64}\nmax_replicas: 2\n")
    with pytest.raises(ConfigError, match=f"{path}: invalid deploy config"):
        load_deploy_config(path)
    c = load_deploy_config(path, model_sha256=MODEL_SHA)
    assert c.max_replicas == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "expected a mapping, got list"), ("a: [", "not valid YAML")],
)
def test_load_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_deploy_config(path)


def test_load_empty_file_reports_the_missing_fields(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="image: Field required"):
        load_deploy_config(path)


def test_load_refuses_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(
        ConfigError, match="unknown deploy config 'staging'; known: dev, prod"
    ):
        load_deploy_config("staging")
    with pytest.raises(ConfigError, match="deploy config file not found"):
        load_deploy_config(tmp_path / "nope.yaml")


def test_parse_overrides():
    result = parse_overrides(
        ["max_replicas=8", "resources.limits.memory=3Gi", "a.b.c=true", "x=", "y=null"]
    )
    assert result == {
        "max_replicas": 8,
        "resources": {"limits": {"memory": "3Gi"}},
        "a": {"b": {"c": True}},
        "x": "",
        "y": None,
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["novalue"], "expected KEY=VALUE"),
        (["a..b=1"], "expected KEY=VALUE"),
        (["=1"], "expected KEY=VALUE"),
        (["a=[1"], "is not valid YAML"),
        (["a=1", "a.b=2"], "a was already set"),
    ],
)
def test_parse_overrides_refuses_bad_items(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(items)


def test_merge_settings_replaces_lists_and_keeps_the_base():
    base = {"a": {"b": 1, "c": [1]}, "d": 2}
    merged = merge_settings(base, {"a": {"c": [2]}, "e": None})
    assert merged == {"a": {"b": 1, "c": [2]}, "d": 2, "e": None}
    assert base == {"a": {"b": 1, "c": [1]}, "d": 2}


def test_config_is_immutable():
    c = config()
    with pytest.raises(Exception, match="frozen"):
        c.max_replicas = 9
    assert isinstance(c, DeployConfig)


def test_importing_mlkit_deploy_loads_no_heavy_client():
    code = (
        "import sys, mlkit.deploy, mlkit.deploy.gate; "
        "heavy = ('torch', 'kubernetes', 'pulumi'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
