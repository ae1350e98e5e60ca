import copy
import logging

import kubernetes_validate
import pytest
import yaml

from mlkit.deploy.config import load_deploy_config, parse_deploy_config
from mlkit.deploy.objects import (
    CONFIG_CHECKSUM_ANNOTATION,
    build_objects,
    config_checksum,
    label_selector,
    object_file_name,
    render_yaml,
    selector_labels,
    serve_environment,
    write_objects,
)
from mlkit.errors import ConfigError

MODEL_SHA = "0123456789ab" + "c" * 52
IMAGE = f"europe-docker.pkg.dev/proj/mlkit/serve:deadbee-{MODEL_SHA[:12]}"
GSA = "mlkit-serve@my-project.iam.gserviceaccount.com"
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0"]
APPLY_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
]

# Configs that between them produce every branch of every object.
VARIANTS = {
    "defaults": {},
    "prod": "prod",
    "everything": {
        "service_type": "LoadBalancer",
        "pre_stop": "sleep",
        "instance": "mlkit-serve-eu",
        "network_policy": {
            "allow_from": [
                {"namespace_labels": {"team": "web"}},
                {"pod_labels": {"app": "gateway"}},
                {"namespace_labels": {"team": "ml"}, "pod_labels": {"app": "batch"}},
            ],
            "allow_cidrs": ["203.0.113.0/24"],
            "allow_dns_egress": True,
        },
        "service_account": {
            "name": "serve-sa",
            "gcp_service_account": GSA,
            "annotations": {"example.com/owner": "ml"},
        },
        "image": "r.io/a/b@sha256:" + "e" * 64,
    },
}


def config(**fields):
    return parse_deploy_config({"image": IMAGE, "model_sha256": MODEL_SHA, **fields})


def variant(name):
    spec = VARIANTS[name]
    if isinstance(spec, str):
        return load_deploy_config(spec, image=IMAGE, model_sha256=MODEL_SHA)
    return config(**spec)


def by_kind(objects):
    return {obj["kind"]: obj for obj in objects}


def pod_spec(objects):
    return by_kind(objects)["Deployment"]["spec"]["template"]["spec"]


def container(objects):
    return pod_spec(objects)["containers"][0]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", APPLY_ORDER)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_object_validates_strictly(name, kind, version):
    obj = by_kind(build_objects(variant(name)))[kind]
    assert kubernetes_validate.validate(obj, version, strict=True) == version[:4]


def test_the_strict_schema_catches_a_misspelled_field():
    # The validation above would be worthless if unknown fields passed.
    deployment = copy.deepcopy(by_kind(build_objects(config()))["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFs"):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_objects_come_in_apply_order():
    assert [obj["kind"] for obj in build_objects(config())] == APPLY_ORDER


def test_optional_objects_can_be_left_out():
    objects = build_objects(
        config(create_namespace=False, network_policy={"enabled": False})
    )
    kinds = [obj["kind"] for obj in objects]
    assert "Namespace" not in kinds and "NetworkPolicy" not in kinds
    assert kinds[0] == "PodDisruptionBudget"


def test_build_objects_validates_a_mapping():
    objects = build_objects({"image": IMAGE, "model_sha256": MODEL_SHA})
    assert len(objects) == len(APPLY_ORDER)
    with pytest.raises(ConfigError, match="min_replicas 3 is above max_replicas 2"):
        build_objects(
            {
                "image": IMAGE,
                "model_sha256": MODEL_SHA,
                "min_replicas": 3,
                "max_replicas": 2,
            }
        )


def test_the_same_config_gives_the_same_objects_and_yaml():
    assert build_objects(config()) == build_objects(config())
    assert render_yaml(build_objects(config())) == render_yaml(build_objects(config()))


def test_everything_namespaced_lives_in_the_configured_namespace():
    objects = build_objects(config(namespace="ml-prod"))
    assert objects[0]["metadata"] == {
        "name": "ml-prod",
        "labels": {
            "app.kubernetes.io/part-of": "mlkit",
            "app.kubernetes.io/managed-by": "mlkit",
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        },
    }
    assert {obj["metadata"]["namespace"] for obj in objects[1:]} == {"ml-prod"}


def test_labels():
    objects = build_objects(config())
    labels = by_kind(objects)["Deployment"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "mlkit-serve"
    assert labels["app.kubernetes.io/instance"] == "mlkit-serve"
    assert labels["app.kubernetes.io/version"] == MODEL_SHA[:12]
    assert labels["app.kubernetes.io/managed-by"] == "mlkit"
    template = by_kind(objects)["Deployment"]["spec"]["template"]["metadata"]
    assert template["labels"]["app.kubernetes.io/version"] == MODEL_SHA[:12]
    assert template["annotations"]["mlkit/model-sha256"] == MODEL_SHA


def test_selectors_stay_the_same_when_the_model_changes():
    other_sha = "f" * 64
    other = config(model_sha256=other_sha, image=f"r/a:x-{other_sha[:12]}")
    for cfg in (config(), other):
        kinds = by_kind(build_objects(cfg))
        selector = {
            "app.kubernetes.io/name": "mlkit-serve",
            "app.kubernetes.io/instance": "mlkit-serve",
        }
        assert kinds["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
        assert kinds["Service"]["spec"]["selector"] == selector
        assert (
            kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
        )
        assert kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == selector
    assert label_selector(config()) == (
        "app.kubernetes.io/name=mlkit-serve,app.kubernetes.io/instance=mlkit-serve"
    )
    assert selector_labels(config(instance="eu"))["app.kubernetes.io/instance"] == "eu"


def test_deployment_has_no_replicas_and_a_safe_rollout():
    deployment = by_kind(build_objects(config()))["Deployment"]
    assert "replicas" not in deployment["spec"]
    assert "replicas" not in render_yaml([deployment]).lower()
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_pod_security():
    objects = build_objects(config())
    pod = pod_spec(objects)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    security = container(objects)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    sa = by_kind(objects)["ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


def test_tmp_is_the_only_writable_path():
    objects = build_objects(config(tmp_size_limit="256Mi"))
    assert container(objects)["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod_spec(objects)["volumes"] == [
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}
    ]
    env = {e["name"]: e["value"] for e in container(objects)["env"]}
    assert env == {"HOME": "/tmp", "HF_HUB_OFFLINE": "1"}


def test_probes():
    c = container(build_objects(config(startup_budget_s=120)))
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 120
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["httpGet"]["port"] for k, p in c.items() if k.endswith("Probe")} == {
        "http"
    }
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    slow = container(build_objects(config(startup_budget_s=301)))["startupProbe"]
    assert slow["failureThreshold"] * slow["periodSeconds"] >= 301


def test_grace_period_covers_pre_stop_and_drain():
    objects = build_objects(config())
    pod = pod_spec(objects)
    pre_stop = container(objects)["lifecycle"]["preStop"]
    assert pre_stop == {"exec": {"command": ["sleep", "5"]}}
    drain = float(serve_environment(config())["MLKIT_SERVE_DRAIN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > 5 + drain


def test_native_sleep_pre_stop_and_none():
    sleep = container(build_objects(config(pre_stop="sleep", pre_stop_sleep_s=7)))
    assert sleep["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    assert "lifecycle" not in container(build_objects(config(pre_stop_sleep_s=0)))


def test_resources():
    c = container(build_objects(config()))
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }


def test_image_is_the_pinned_reference_never_latest():
    for name in VARIANTS:
        image = container(build_objects(variant(name)))["image"]
        assert not image.endswith(":latest") and (":" in image or "@" in image)
    assert container(build_objects(config()))["image"] == IMAGE


def test_serve_settings_reach_the_pods_through_the_config_map():
    objects = build_objects(config(serve={"max_batch_size": 8, "max_wait_ms": 2.5}))
    data = by_kind(objects)["ConfigMap"]["data"]
    assert data["MLKIT_SERVE_MAX_BATCH_SIZE"] == "8"
    assert data["MLKIT_SERVE_MAX_WAIT_MS"] == "2.5"
    assert data["MLKIT_SERVE_MAX_QUEUE"] == "256"
    assert data["MLKIT_SERVE_DRAIN_TIMEOUT_S"] == "20"
    assert data["MLKIT_SERVE_PORT"] == "8080"
    assert data["MLKIT_SERVE_MODEL_WORKERS"] == "2"
    assert data["MLKIT_SERVE_TORCH_THREADS"] == "1"
    assert all(isinstance(v, str) for v in data.values())
    assert container(objects)["envFrom"] == [{"configMapRef": {"name": "mlkit-serve"}}]


def test_the_server_gets_the_model_sha_and_extra_settings():
    cfg = config(serve={"extra": {"min_confidence": 0.6, "log_level": "debug"}})
    data = by_kind(build_objects(cfg))["ConfigMap"]["data"]
    assert data["MLKIT_SERVE_EXPECTED_MODEL_SHA256"] == MODEL_SHA
    assert data["MLKIT_SERVE_MIN_CONFIDENCE"] == "0.6"
    assert data["MLKIT_SERVE_LOG_LEVEL"] == "debug"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"no_such_setting": 1}, "MLKIT_SERVE_NO_SUCH_SETTING"),
        ({"log_level": "loud"}, "log_level"),
        ({"min_confidence": 2}, "min_confidence"),
    ],
)
def test_settings_the_server_would_refuse_are_refused(extra, message):
    with pytest.raises(
        ConfigError, match="the server would refuse its settings"
    ) as info:
        build_objects(config(serve={"extra": extra}))
    assert message in str(info.value)


def test_a_serve_setting_change_rolls_the_pods():
    def checksum(cfg):
        template = by_kind(build_objects(cfg))["Deployment"]["spec"]["template"]
        return template["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]

    base = checksum(config())
    assert base == config_checksum(config())
    assert checksum(config(serve={"max_batch_size": 32})) != base
    assert checksum(config(serve={"drain_timeout_s": 10})) != base
    # A change that does not touch the server's settings keeps the pods.
    assert checksum(config(max_replicas=9)) == base


def test_prometheus_scrape_annotations():
    template = by_kind(build_objects(config()))["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_spread_over_zones_and_nodes_softly():
    spread = pod_spec(build_objects(config()))["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    assert {s["whenUnsatisfiable"] for s in spread} == {"ScheduleAnyway"}


def test_hpa_targets_the_deployment_with_the_bounds():
    objects = build_objects(config(min_replicas=2, max_replicas=8))
    hpa = by_kind(objects)["HorizontalPodAutoscaler"]["spec"]
    deployment = by_kind(objects)["Deployment"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    target = hpa["metrics"][0]["resource"]
    assert target == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    assert hpa["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_hpa_behavior_is_configurable():
    cfg = config(
        behavior={
            "scale_down": {
                "stabilization_window_s": 60,
                "select_policy": "Min",
                "policies": [{"type": "Pods", "value": 1, "period_s": 30}],
            }
        }
    )
    down = by_kind(build_objects(cfg))["HorizontalPodAutoscaler"]["spec"]["behavior"]
    assert down["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
    }


def test_pdb():
    spec = by_kind(build_objects(config()))["PodDisruptionBudget"]["spec"]
    assert spec["minAvailable"] == 1
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pdb_equal_to_min_replicas_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.objects"):
        build_objects(config(min_replicas=2, pdb_min_available=1))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="mlkit.deploy.objects"):
        build_objects(config())
    assert "node drains wait" in caplog.text


def test_default_network_policy_admits_cluster_pods_on_the_port_only():
    spec = by_kind(build_objects(config()))["NetworkPolicy"]["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {
            "from": [{"namespaceSelector": {}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    assert spec["egress"] == []


def test_configured_network_policy():
    spec = by_kind(build_objects(variant("everything")))["NetworkPolicy"]["spec"]
    assert spec["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "web"}}},
        {"podSelector": {"matchLabels": {"app": "gateway"}}},
        {
            "namespaceSelector": {"matchLabels": {"team": "ml"}},
            "podSelector": {"matchLabels": {"app": "batch"}},
        },
        {"ipBlock": {"cidr": "203.0.113.0/24"}},
    ]
    (dns,) = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}


def test_no_peers_means_no_ingress_at_all():
    spec = by_kind(build_objects(config(network_policy={"allow_from": []})))[
        "NetworkPolicy"
    ]["spec"]
    assert spec["ingress"] == [] and "Ingress" in spec["policyTypes"]


def test_service():
    objects = build_objects(config())
    service = by_kind(objects)["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}
    ]
    assert "externalTrafficPolicy" not in service
    lb = by_kind(build_objects(variant("everything")))["Service"]["spec"]
    assert lb["type"] == "LoadBalancer" and lb["externalTrafficPolicy"] == "Local"


def test_workload_identity_annotation():
    objects = build_objects(variant("everything"))
    sa = by_kind(objects)["ServiceAccount"]["metadata"]
    assert sa["name"] == "serve-sa"
    assert sa["annotations"] == {
        "example.com/owner": "ml",
        "iam.gke.io/gcp-service-account": GSA,
    }
    assert pod_spec(objects)["serviceAccountName"] == "serve-sa"
    assert (
        "annotations"
        not in by_kind(build_objects(config()))["ServiceAccount"]["metadata"]
    )


def test_render_yaml_round_trips_in_order():
    objects = build_objects(variant("everything"))
    text = render_yaml(objects)
    assert text.startswith("---\napiVersion: v1\nkind: Namespace\n")
    assert text.count("\n---\n") == len(objects) - 1
    assert list(yaml.safe_load_all(text)) == objects
    # Strings that YAML would read as other types stay strings.
    assert "prometheus.io/scrape: 'true'" in text


def test_render_yaml_accepts_tuples():
    text = render_yaml([{"kind": "X", "items": (1, 2)}])
    assert yaml.safe_load(text) == {"kind": "X", "items": [1, 2]}


def test_write_objects_one_file_per_object(tmp_path):
    objects = build_objects(config())
    paths = write_objects(objects, tmp_path / "out")
    assert [p.name for p in paths] == [
        "00-namespace.yaml",
        "10-networkpolicy.yaml",
        "20-poddisruptionbudget.yaml",
        "30-serviceaccount.yaml",
        "40-configmap.yaml",
        "50-service.yaml",
        "60-deployment.yaml",
        "70-horizontalpodautoscaler.yaml",
    ]
    assert sorted(paths) == paths
    for obj, path in zip(objects, paths, strict=True):
        assert yaml.safe_load(path.read_text()) == obj
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        p.name for p in paths
    ]


def test_write_objects_removes_stale_renders_only(tmp_path):
    write_objects(build_objects(config()), tmp_path)
    (tmp_path / "README.md").write_text("mine")
    (tmp_path / "kustomization.yaml").write_text("resources: []")
    paths = write_objects(
        build_objects(config(network_policy={"enabled": False})), tmp_path
    )
    names = {p.name for p in tmp_path.iterdir()}
    assert "10-networkpolicy.yaml" not in names
    assert {"README.md", "kustomization.yaml"} <= names
    assert names == {p.name for p in paths} | {"README.md", "kustomization.yaml"}


def test_write_objects_refuses_two_objects_for_one_file(tmp_path):
    objects = build_objects(config())
    with pytest.raises(ValueError, match="60-deployment.yaml"):
        write_objects([objects[6], objects[6]], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_object_file_name_of_an_unknown_kind():
    assert object_file_name({"kind": "Ingress"}) == "99-ingress.yaml"
