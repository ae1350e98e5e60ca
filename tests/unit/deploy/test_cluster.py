"""Tests of mlkit.deploy.cluster against tests/fake_kube.py: this is a fake API
server, not a cluster.

The fake answers the same HTTP requests as a real API server (discovery,
server-side apply, gets and lists) but runs no controller, so each test sets
the Deployment, autoscaler and pod states it needs. What these tests cannot
show (real defaulting, field ownership, scheduling) is left to a real cluster.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from mlkit.deploy import cluster as cluster_module
from mlkit.deploy.cluster import (
    SAMPLE_COLUMNS,
    AppliedObject,
    Cluster,
    ClusterError,
    ClusterUnreachable,
    RolloutFailed,
    connect,
)
from mlkit.errors import ConfigError
from tests.fake_kube import FakeKube

NS = "mlkit"
LABELS = {"app.kubernetes.io/name": "mlkit-serve", "app.kubernetes.io/instance": "dev"}


def make_objects(image: str = "example.com/mlkit:abc-123", replicas: int = 2):
    """A Namespace, Service, Deployment and HPA shaped like the real ones."""
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"app.kubernetes.io/part-of": "mlkit"}},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mlkit-serve", "namespace": NS, "labels": LABELS},
        "spec": {
            "type": "LoadBalancer",
            "selector": LABELS,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "mlkit-serve", "namespace": NS, "labels": LABELS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": LABELS},
            "template": {
                "metadata": {"labels": LABELS},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": image,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"cpu": "2", "memory": "2Gi"},
                            },
                        }
                    ]
                },
            },
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "mlkit-serve", "namespace": NS, "labels": LABELS},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "mlkit-serve",
            },
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    return [namespace, service, deployment, hpa]


def patches(fake: FakeKube):
    return [r for r in fake.requests if r.method == "PATCH"]


# -- connect ---------------------------------------------------------------------


def test_connect_checks_the_server_and_sends_the_token(cluster, fake_kube):
    assert cluster.server == fake_kube.url
    assert cluster.check()["gitVersion"] == "v1.31.0-fake"
    versions = [r for r in fake_kube.requests if r.path.rstrip("/") == "/version"]
    assert versions, "connect must ask for /version before anything else"
    assert fake_kube.requests[0].path.rstrip("/") == "/version"
    assert versions[0].headers["authorization"] == "Bearer dummy-token"


def test_connect_reads_kubeconfig_variable_when_no_file_is_given(
    kubeconfig, fake_kube, monkeypatch
):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with connect(context="fake") as cluster:
        assert cluster.server == fake_kube.url
        assert str(kubeconfig) in cluster.source
        assert "'fake'" in cluster.source


def test_unreachable_cluster_names_the_server(tmp_path):
    with FakeKube() as fake:
        config = fake.kubeconfig()
        url = fake.url
    # The fake is stopped: its port is closed now.
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ClusterUnreachable) as info:
        connect(path, request_timeout_s=2.0)
    assert url in str(info.value)
    assert "cannot reach" in str(info.value)
    assert info.value.server == url


def test_missing_kubeconfig_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="kubeconfig file not found") as info:
        connect(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    "text",
    ["clusters: [unclosed\n", "just a string\n", "apiVersion: v1\nkind: Config\n"],
    ids=["bad-yaml", "not-a-mapping", "no-context"],
)
def test_bad_kubeconfig_is_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not a usable kubeconfig") as info:
        connect(path)
    assert str(path) in str(info.value)


def test_unknown_context_is_a_config_error(kubeconfig):
    with pytest.raises(ConfigError, match="context 'staging'") as info:
        connect(kubeconfig, context="staging")
    assert str(kubeconfig) in str(info.value)


def test_in_cluster_without_service_account_is_a_config_error(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster service account"):
        connect()


def test_rejected_credentials_say_so(kubeconfig, fake_kube):
    fake_kube.fail_next("GET", "/version", status=401)
    with pytest.raises(ClusterError, match="rejected") as info:
        connect(kubeconfig)
    assert info.value.status == 401
    assert str(kubeconfig) in str(info.value)


def test_forbidden_discovery_fails_connect(kubeconfig, fake_kube):
    # /version is open to anonymous users; the API group list is not, so a
    # kubeconfig without working credentials fails here, before any apply.
    fake_kube.fail_next("GET", "/apis", status=403)
    with pytest.raises(ClusterError, match="discover the API groups") as info:
        connect(kubeconfig)
    assert info.value.status == 403
    assert "RBAC" in str(info.value)


def test_an_answer_that_is_not_json_is_a_cluster_error(cluster):
    with pytest.raises(ClusterError, match="is not JSON"), cluster._calling("x"):
        json.loads("<html>proxy login</html>")


def test_request_timeout_must_be_positive(cluster):
    with pytest.raises(ConfigError, match="request_timeout_s"):
        Cluster(cluster._api, request_timeout_s=0)


def test_tls_failure_is_reported_as_unreachable(cluster):
    from kubernetes.client.exceptions import ApiException

    error = cluster._api_error(ApiException(status=0, reason="SSLError\nbad"), "x")
    assert isinstance(error, ClusterUnreachable)
    assert "SSLError bad" in str(error)


def test_importing_the_module_does_not_import_kubernetes():
    code = (
        "import sys, mlkit.deploy.cluster; "
        "assert 'kubernetes' not in sys.modules, 'kubernetes imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


# -- apply -----------------------------------------------------------------------


def test_apply_creates_then_is_idempotent_then_updates(cluster, fake_kube):
    first = cluster.apply(make_objects())

    assert [a.ref for a in first] == [
        "Namespace mlkit",
        "Service mlkit/mlkit-serve",
        "Deployment mlkit/mlkit-serve",
        "HorizontalPodAutoscaler mlkit/mlkit-serve",
    ]
    assert all(isinstance(a, AppliedObject) and a.created for a in first)
    assert first[0].namespace is None
    sent = patches(fake_kube)
    assert [r.path for r in sent] == [
        "/api/v1/namespaces/mlkit",
        "/api/v1/namespaces/mlkit/services/mlkit-serve",
        "/apis/apps/v1/namespaces/mlkit/deployments/mlkit-serve",
        "/apis/autoscaling/v2/namespaces/mlkit/horizontalpodautoscalers/mlkit-serve",
    ]
    for request in sent:
        assert request.headers["content-type"] == "application/apply-patch+yaml"
        assert request.query["fieldManager"] == "mlkit"
        assert request.query["force"] == "true"
    assert sent[2].body == make_objects()[2]
    stored = fake_kube.get("deployments", NS, "mlkit-serve")
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "example.com/mlkit:abc-123"
    )
    assert stored["metadata"]["managedFields"][0]["manager"] == "mlkit"

    again = cluster.apply(make_objects())
    assert not any(a.created for a in again)
    assert [a.resource_version for a in again] == [a.resource_version for a in first]
    assert again[2].generation == first[2].generation == 1
    assert again[2].uid == first[2].uid

    updated = cluster.apply(make_objects(image="example.com/mlkit:def-456"))
    assert updated[2].generation == 2
    assert updated[2].resource_version != first[2].resource_version
    assert updated[2].live["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "example.com/mlkit:def-456"
    )


def test_apply_sends_the_field_manager_and_conflict_policy_asked_for(
    cluster, fake_kube
):
    cluster.apply(make_objects()[:1], field_manager="ci", force=False)
    (request,) = patches(fake_kube)
    assert request.query["fieldManager"] == "ci"
    assert request.query["force"] == "false"


def test_dry_run_apply_stores_nothing(cluster, fake_kube):
    result = cluster.apply(make_objects()[:1], dry_run=True)
    assert result[0].created
    assert patches(fake_kube)[0].query["dryRun"] == "All"
    assert fake_kube.get("namespaces", None, NS) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.__setitem__("metadata", {}), r"object 3 \(Deployment\).*name"),
        (lambda o: o.pop("apiVersion"), "missing apiVersion"),
        (lambda o: o["metadata"].pop("namespace"), "has no metadata.namespace"),
    ],
    ids=["no-name", "no-api-version", "no-namespace"],
)
def test_apply_checks_every_object_before_applying_any(
    cluster, fake_kube, mutate, message
):
    objects = make_objects()
    mutate(objects[2])
    with pytest.raises(ConfigError, match=message):
        cluster.apply(objects)
    assert patches(fake_kube) == []


def test_apply_rejects_non_mapping_objects(cluster):
    with pytest.raises(ConfigError, match="object 1: expected a Kubernetes object"):
        cluster.apply(["kind: Namespace"])


def test_apply_of_an_unserved_kind_fails_before_applying(cluster, fake_kube):
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
    }
    with pytest.raises(ClusterError, match="does not serve kind Widget"):
        cluster.apply([*make_objects(), widget])
    assert patches(fake_kube) == []


def test_apply_error_names_the_object_and_what_was_applied(cluster, fake_kube):
    fake_kube.fail_next("PATCH", "/deployments/", status=403)
    with pytest.raises(ClusterError) as info:
        cluster.apply(make_objects())
    message = str(info.value)
    assert "apply Deployment mlkit/mlkit-serve (object 3 of 4, 2 applied)" in message
    assert "RBAC" in message
    assert info.value.status == 403
    assert fake_kube.get("services", NS, "mlkit-serve") is not None
    assert fake_kube.get("horizontalpodautoscalers", NS, "mlkit-serve") is None


# -- rollout ---------------------------------------------------------------------


def test_wait_for_rollout_returns_when_every_replica_is_available(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.complete_rollout_after(NS, "mlkit-serve", polls=3)

    status = cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=10, interval_s=0.01)

    assert status.complete and not status.failed
    assert status.polls == 3
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (
        2,
        2,
        2,
    )
    assert status.observed_generation == status.generation == 1


def test_wait_for_rollout_retries_a_failed_poll(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.complete_rollout_after(NS, "mlkit-serve", polls=2)
    fake_kube.fail_next("GET", "/deployments/mlkit-serve", status=503)

    status = cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=10, interval_s=0.01)

    assert status.complete
    assert status.polls == 2


def test_wait_for_rollout_of_a_missing_deployment_fails_at_once(cluster, fake_kube):
    cluster.apply(make_objects()[:1])
    with pytest.raises(ClusterError, match="not found") as info:
        cluster.wait_for_rollout(NS, "absent", timeout_s=10, interval_s=0.01)
    assert info.value.status == 404


def test_rollout_timeout_reports_image_pull_backoff(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.stall_rollout(NS, "mlkit-serve", reason="ImagePullBackOff")

    with pytest.raises(RolloutFailed) as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.05, interval_s=0.01)

    error = info.value
    message = str(error)
    assert "did not finish within 0.05 s" in message
    assert "0 of 2 updated replicas available" in message
    assert "2 of 2 pods are not ready" in message
    assert "pod mlkit-serve-def34-0: phase Pending, restarts 0" in message
    assert "container server waiting: ImagePullBackOff" in message
    assert 'Back-off pulling image "example.com/mlkit:missing"' in message
    assert "event Warning Failed: Error: ImagePullBackOff" in message
    assert "hint (ImagePullBackOff)" in message
    assert len(error.pods) == 2
    assert error.pods[0].reasons == ("ImagePullBackOff",)
    assert not error.rollout.complete
    assert error.rollout.polls >= 1


def test_progress_deadline_exceeded_fails_without_waiting(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.stall_rollout(NS, "mlkit-serve", deadline_exceeded=True)

    with pytest.raises(RolloutFailed) as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=60, interval_s=0.01)

    assert info.value.rollout.failed
    assert info.value.rollout.polls == 1
    message = str(info.value)
    assert "rollout failed: the controller reports ProgressDeadlineExceeded" in message
    assert "has timed out progressing" in message


def test_rollout_report_shows_crash_loops_restarts_and_oom(cluster, fake_kube):
    cluster.apply(make_objects(replicas=1))
    fake_kube.set_status(
        "deployments",
        NS,
        "mlkit-serve",
        {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1},
    )
    fake_kube.add_pod(
        NS,
        "mlkit-serve-xyz-0",
        dict(LABELS),
        ready=False,
        waiting=("CrashLoopBackOff", "back-off 40s restarting failed container"),
        terminated=("OOMKilled", 137),
        restarts=4,
    )
    fake_kube.add_pod(NS, "unrelated", {"app": "other"}, ready=False)

    with pytest.raises(RolloutFailed) as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)

    message = str(info.value)
    assert "pod mlkit-serve-xyz-0: phase Running, restarts 4" in message
    assert "container server waiting: CrashLoopBackOff" in message
    assert "container server last terminated: OOMKilled (exit code 137)" in message
    assert "hint (CrashLoopBackOff)" in message
    assert "hint (OOMKilled)" in message
    assert "unrelated" not in message


def test_rollout_report_without_pods_says_so(cluster, fake_kube):
    cluster.apply(make_objects(replicas=1))
    with pytest.raises(RolloutFailed, match="no pod exists") as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)
    assert "waiting for the controller to see generation 1" in str(info.value)
    assert info.value.pods == ()


def test_rollout_report_is_bounded_and_survives_unreadable_events(cluster, fake_kube):
    cluster.apply(make_objects(replicas=7))
    fake_kube.stall_rollout(NS, "mlkit-serve", reason="ErrImagePull")
    fake_kube.fail_next("GET", "/events", status=403)

    with pytest.raises(RolloutFailed) as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)

    message = str(info.value)
    assert "7 of 7 pods are not ready" in message
    assert "... and 2 more" in message
    assert len(info.value.pods) == 5
    assert info.value.pods[0].events == ()
    assert info.value.pods[1].events == ("Warning Failed: Error: ErrImagePull",)


def test_rollout_report_when_pods_cannot_be_listed(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.stall_rollout(NS, "mlkit-serve")
    fake_kube.fail_next("GET", "/pods", status=403)

    with pytest.raises(RolloutFailed, match="could not list the pods") as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)
    assert info.value.pods == ()


def test_rollout_report_shows_unschedulable_and_terminated_pods(cluster, fake_kube):
    cluster.apply(make_objects(replicas=2))
    fake_kube.set_status(
        "deployments",
        NS,
        "mlkit-serve",
        {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2},
    )
    pending = fake_kube.add_pod(
        NS, "p-pending", dict(LABELS), phase="Pending", ready=False
    )
    pending["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }
        ],
    }
    failed = fake_kube.add_pod(
        NS, "p-failed", dict(LABELS), phase="Failed", ready=False
    )
    failed["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"reason": "Error", "exitCode": 1}
    }

    with pytest.raises(RolloutFailed) as info:
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)

    message = str(info.value)
    assert "1 old replicas still terminating" in message
    assert "condition PodScheduled: Unschedulable (0/3 nodes are available" in message
    assert "hint (Unschedulable)" in message
    assert "container server terminated: Error (exit code 1)" in message


def test_rollout_report_when_every_pod_is_ready(cluster, fake_kube):
    cluster.apply(make_objects(replicas=2))
    fake_kube.add_pod(NS, "p0", dict(LABELS))
    with pytest.raises(RolloutFailed, match="all 1 pods are ready"):
        cluster.wait_for_rollout(NS, "mlkit-serve", timeout_s=0.02, interval_s=0.01)


@pytest.mark.parametrize(
    ("status", "spec_replicas", "message", "complete"),
    [
        ({"observedGeneration": 2}, 2, "waiting for the controller", False),
        ({"observedGeneration": 3, "updatedReplicas": 1}, 2, "1 of 2 replicas", False),
        (
            {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2},
            2,
            "1 old replicas still terminating",
            False,
        ),
        (
            {
                "observedGeneration": 3,
                "replicas": 2,
                "updatedReplicas": 2,
                "availableReplicas": 2,
            },
            2,
            "2 of 2 replicas available",
            True,
        ),
        ({"observedGeneration": 3}, 0, "0 of 0 replicas available", True),
    ],
)
def test_rollout_status_follows_kubectl(status, spec_replicas, message, complete):
    live = {
        "metadata": {"name": "d", "namespace": "n", "generation": 3},
        "spec": {"replicas": spec_replicas},
        "status": status,
    }
    result = cluster_module._rollout_status(live, 1.0, 1)
    assert message in result.message
    assert result.complete is complete


def test_label_selector_translates_match_expressions():
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "env", "operator": "NotIn", "values": ["test"]},
            {"key": "canary", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert cluster_module._label_selector(selector) == (
        "a=1,b=2,tier in (web,api),env notin (test),canary,!legacy"
    )
    assert cluster_module._label_selector(None) is None
    with pytest.raises(ClusterError, match="operator"):
        cluster_module._label_selector(
            {"matchExpressions": [{"key": "k", "operator": "Near"}]}
        )


# -- autoscaler and sampling -------------------------------------------------------

HPA_STATUS = {
    "currentReplicas": 2,
    "desiredReplicas": 3,
    "lastScaleTime": "2026-01-01T00:00:00Z",
    "currentMetrics": [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "current": {"averageUtilization": 85, "averageValue": "850m"},
            },
        }
    ],
    "conditions": [
        {
            "type": "AbleToScale",
            "status": "True",
            "reason": "SucceededRescale",
            "message": "the HPA controller was able to update the target scale to 3",
        },
        {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange"},
    ],
}


def test_hpa_status_flattens_the_autoscaler(cluster, fake_kube):
    cluster.apply(make_objects())
    fake_kube.set_status("horizontalpodautoscalers", NS, "mlkit-serve", HPA_STATUS)

    status = cluster.hpa_status(NS, "mlkit-serve")

    assert status == {
        "namespace": NS,
        "name": "mlkit-serve",
        "min_replicas": 2,
        "max_replicas": 6,
        "current_replicas": 2,
        "desired_replicas": 3,
        "current_cpu_utilization": 85,
        "target_cpu_utilization": 70,
        "last_scale_time": "2026-01-01T00:00:00Z",
        "conditions": [
            {
                "type": "AbleToScale",
                "status": "True",
                "reason": "SucceededRescale",
                "message": "the HPA controller was able to update the target scale "
                "to 3",
            },
            {
                "type": "ScalingLimited",
                "status": "False",
                "reason": "DesiredWithinRange",
                "message": None,
            },
        ],
    }


def test_hpa_status_before_the_first_metrics(cluster):
    cluster.apply(make_objects())
    status = cluster.hpa_status(NS, "mlkit-serve")
    assert status["current_cpu_utilization"] is None
    assert status["desired_replicas"] is None
    assert status["conditions"] == []


def test_hpa_status_of_a_missing_autoscaler(cluster):
    cluster.apply(make_objects()[:1])
    with pytest.raises(ClusterError, match="read autoscaler mlkit/absent"):
        cluster.hpa_status(NS, "absent")


class FakeClock:
    """time.monotonic and time.sleep for the polling loops; ``on_sleep`` runs
    at each sleep, so that a test can change the cluster between polls."""

    def __init__(self, on_sleep=None):
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


@pytest.fixture
def clock(monkeypatch):
    fake_clock = FakeClock()
    monkeypatch.setattr(cluster_module, "_monotonic", fake_clock.monotonic)
    monkeypatch.setattr(cluster_module, "_sleep", fake_clock.sleep)
    return fake_clock


def scaled_deployment(fake: FakeKube, replicas: int, ready: int) -> None:
    fake.set_status(
        "deployments",
        NS,
        "mlkit-serve",
        {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    )


def test_sample_returns_one_row_per_poll(cluster, fake_kube, clock):
    cluster.apply(make_objects())
    scaled_deployment(fake_kube, 2, 2)
    fake_kube.set_status("horizontalpodautoscalers", NS, "mlkit-serve", HPA_STATUS)
    fake_kube.add_pod(NS, "p0", dict(LABELS), cpu="900m")
    fake_kube.add_pod(NS, "p1", dict(LABELS), cpu="800000000n")

    def scale_up(sleeps: int) -> None:
        if sleeps == 1:
            scaled_deployment(fake_kube, 3, 2)
            fake_kube.add_pod(NS, "p2", dict(LABELS), phase="Pending", ready=False)
        if sleeps == 2:
            scaled_deployment(fake_kube, 3, 3)
            fake_kube.add_pod(NS, "p2", dict(LABELS), cpu="250m")
            fake_kube.add_pod(NS, "p3", dict(LABELS), terminating=True)

    clock.on_sleep = scale_up
    frame = cluster.sample(
        NS, "mlkit-serve", "mlkit-serve", duration_s=10, interval_s=5
    )

    assert list(frame.columns) == list(SAMPLE_COLUMNS)
    assert frame["time_s"].tolist() == [0.0, 5.0, 10.0]
    assert frame["replicas"].tolist() == [2, 3, 3]
    assert frame["ready_replicas"].tolist() == [2, 2, 3]
    assert frame["desired_replicas"].tolist() == [3, 3, 3]
    assert frame["cpu_utilization"].tolist() == [85.0, 85.0, 85.0]
    assert frame["cpu_millicores"].tolist() == pytest.approx([1700.0, 1700.0, 1950.0])
    assert frame["pods_pending"].tolist() == [0, 1, 0]
    assert frame["pods_running"].tolist() == [2, 2, 4]
    assert frame["pods_terminating"].tolist() == [0, 0, 1]
    assert frame["pods_failed"].sum() == 0
    assert clock.sleeps == [5.0, 5.0]


def test_sample_skips_the_slots_a_slow_poll_overran(cluster, fake_kube, clock):
    cluster.apply(make_objects())
    scaled_deployment(fake_kube, 2, 2)

    def slow(fake: FakeKube) -> None:
        clock.now += 7.0

    # GETs of the deployment: sample's check, the poll at 0 s, the poll at 5 s.
    fake_kube.on_get("deployments", NS, "mlkit-serve", slow, after=3)
    frame = cluster.sample(NS, "mlkit-serve", duration_s=20, interval_s=5)

    assert frame["time_s"].tolist() == [0.0, 5.0, 15.0, 20.0]
    assert clock.sleeps == [5.0, 3.0, 5.0]


def test_sample_without_metrics_api_gives_nan(tmp_path, clock, caplog):
    with FakeKube(metrics=False) as fake:
        path = tmp_path / "kubeconfig.yaml"
        path.write_text(yaml.safe_dump(fake.kubeconfig()), encoding="utf-8")
        with connect(path) as cluster:
            cluster.apply(make_objects())
            scaled_deployment(fake, 2, 2)
            fake.add_pod(NS, "p0", dict(LABELS))
            with caplog.at_level(logging.WARNING, logger=cluster_module.__name__):
                frame = cluster.sample(NS, "mlkit-serve", duration_s=10, interval_s=5)

    assert len(frame) == 3
    assert frame["cpu_millicores"].isna().all()
    assert frame["cpu_utilization"].isna().all()
    assert frame["desired_replicas"].tolist() == [2, 2, 2]
    assert frame["pods_running"].tolist() == [1, 1, 1]
    warnings = [r for r in caplog.records if "metrics.k8s.io" in r.getMessage()]
    assert len(warnings) == 1


def test_sample_skips_a_failed_poll(cluster, fake_kube, clock, caplog):
    cluster.apply(make_objects())
    scaled_deployment(fake_kube, 2, 2)
    clock.on_sleep = lambda n: n == 1 and fake_kube.fail_next("GET", "/pods", 500)

    with caplog.at_level(logging.WARNING, logger=cluster_module.__name__):
        frame = cluster.sample(NS, "mlkit-serve", duration_s=10, interval_s=5)

    assert frame["time_s"].tolist() == [0.0, 10.0]
    assert any("skipped" in r.getMessage() for r in caplog.records)


def test_sample_stops_on_a_lasting_error(cluster, fake_kube, clock):
    cluster.apply(make_objects())
    scaled_deployment(fake_kube, 2, 2)
    clock.on_sleep = lambda n: fake_kube.fail_next("GET", "/horizontalpod", 404)

    with pytest.raises(ClusterError, match="read autoscaler") as info:
        cluster.sample(NS, "mlkit-serve", "mlkit-serve", duration_s=60, interval_s=5)
    assert info.value.status == 404


def test_sample_stops_early_when_interrupted(cluster, fake_kube, clock):
    cluster.apply(make_objects())
    scaled_deployment(fake_kube, 2, 2)

    def interrupt(sleeps: int) -> None:
        raise KeyboardInterrupt

    clock.on_sleep = interrupt
    frame = cluster.sample(NS, "mlkit-serve", duration_s=60, interval_s=5)

    assert len(frame) == 1
    assert frame["replicas"].tolist() == [2]


def test_sample_of_a_missing_deployment_fails_before_sampling(cluster, clock):
    cluster.apply(make_objects()[:1])
    with pytest.raises(ClusterError, match="not found"):
        cluster.sample(NS, "absent", duration_s=10, interval_s=5)
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("duration_s", "interval_s"), [(-1, 5), (10, 0), (math.nan, 5)]
)
def test_sample_rejects_bad_timing(cluster, duration_s, interval_s):
    with pytest.raises(ConfigError, match="duration_s"):
        cluster.sample(NS, "mlkit-serve", duration_s=duration_s, interval_s=interval_s)


def test_sample_frame_is_empty_with_the_columns_when_nothing_was_sampled(
    cluster, fake_kube, clock
):
    cluster.apply(make_objects())
    fake_kube.fail_next("GET", "/pods", 500)
    frame = cluster.sample(NS, "mlkit-serve", duration_s=0, interval_s=5)
    assert isinstance(frame, pd.DataFrame)
    assert frame.empty
    assert list(frame.columns) == list(SAMPLE_COLUMNS)


@pytest.mark.parametrize(
    ("quantity", "millicores"),
    [("250m", 250.0), ("1", 1000.0), ("12345678n", 12.345678), ("1500u", 1.5)],
)
def test_cpu_quantities(quantity, millicores):
    assert cluster_module._cpu_millicores(quantity) == pytest.approx(millicores)


def test_unreadable_cpu_quantity_is_nan():
    assert math.isnan(cluster_module._cpu_millicores("lots"))


# -- service address ---------------------------------------------------------------


def service(fake: FakeKube, spec: dict, status: dict | None = None) -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    fake.put(copy.deepcopy(obj))


HTTP_PORTS = [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80}]


@pytest.mark.parametrize(
    ("ingress", "url"),
    [
        ({"ip": "34.1.2.3"}, "http://34.1.2.3"),
        ({"hostname": "lb.example.com"}, "http://lb.example.com"),
        ({"ip": "2001:db8::1"}, "http://[2001:db8::1]"),
    ],
)
def test_service_url_of_a_load_balancer(cluster, fake_kube, ingress, url):
    service(
        fake_kube,
        {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "ports": HTTP_PORTS},
        {"loadBalancer": {"ingress": [ingress]}},
    )
    assert cluster.service_url(NS, "web") == url
    assert cluster.service_url(NS, "web", port="metrics") == f"{url}:9090"


def test_service_url_of_a_cluster_ip_service(cluster, fake_kube):
    service(
        fake_kube,
        {
            "type": "ClusterIP",
            "clusterIP": "10.0.0.5",
            "ports": [{"name": "web", "port": 8080}],
        },
    )
    assert cluster.service_url(NS, "web") == "http://10.0.0.5:8080"
    assert cluster.service_url(NS, "web", port=8080) == "http://10.0.0.5:8080"
    with pytest.raises(ClusterError, match="has no port 81 .it has web."):
        cluster.service_url(NS, "web", port=81)


def test_service_url_waits_for_the_load_balancer(cluster, fake_kube, clock):
    service(
        fake_kube,
        {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "ports": HTTP_PORTS},
    )

    def assign(fake: FakeKube) -> None:
        fake.set_status(
            "services", NS, "web", {"loadBalancer": {"ingress": [{"ip": "34.9.9.9"}]}}
        )

    fake_kube.on_get("services", NS, "web", assign, after=3)
    assert cluster.service_url(NS, "web", wait_s=60, interval_s=2) == "http://34.9.9.9"
    assert clock.sleeps == [2, 2]


def test_service_url_of_a_pending_load_balancer_fails(cluster, fake_kube, clock):
    service(
        fake_kube,
        {"type": "LoadBalancer", "clusterIP": "10.0.0.5", "ports": HTTP_PORTS},
    )
    with pytest.raises(ClusterError, match="no external address yet"):
        cluster.service_url(NS, "web", wait_s=3, interval_s=2)
    assert clock.sleeps == [2, 1]


def test_service_url_of_a_headless_or_portless_service_fails(cluster, fake_kube):
    service(fake_kube, {"clusterIP": "None", "ports": [{"port": 80}]})
    with pytest.raises(ClusterError, match="headless"):
        cluster.service_url(NS, "web")
    service(fake_kube, {"type": "ClusterIP", "clusterIP": "10.0.0.5", "ports": []})
    with pytest.raises(ClusterError, match="exposes no port"):
        cluster.service_url(NS, "web")


def test_in_cluster_configuration_is_used_in_a_pod(monkeypatch, tmp_path):
    from kubernetes.config import incluster_config

    token, cert = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("dummy-token", encoding="utf-8")
    cert.write_text("not read: the connection is refused first", encoding="utf-8")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(cert))
    with FakeKube() as fake:
        port = fake.url.rsplit(":", 1)[1]
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)

    with pytest.raises(ClusterUnreachable) as info:
        connect(request_timeout_s=2.0)

    assert info.value.server == f"https://127.0.0.1:{port}"


def test_cluster_repr_names_the_server(cluster, fake_kube):
    assert fake_kube.url in repr(cluster)
