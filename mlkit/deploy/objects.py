"""The inference service's Kubernetes objects, built from one DeployConfig.

This is the only place that spells out the Kubernetes spec of the service:
``mlkit deploy render`` writes these objects as YAML, the Pulumi program in
``infra/`` applies the same dicts, and the tests validate every one against
the OpenAPI schemas of Kubernetes 1.30 to 1.33. The objects are plain dicts,
built in apply order (Helm's install order: the Namespace first, the policies
before the pods they protect, the HorizontalPodAutoscaler after its target).

Choices that are easy to get wrong:

- The Deployment has no ``replicas``: the HPA owns the count, and every apply
  of a ``replicas`` field would reset it.
- Selectors use only the name and instance labels: a Deployment's selector is
  immutable, so the version label (which changes with each model) stays out.
- ``enableServiceLinks`` is off: Kubernetes would otherwise inject
  ``MLKIT_SERVE_PORT=tcp://...`` for a Service named ``mlkit-serve``, which
  collides with the server's own ``MLKIT_SERVE_*`` settings.
- The preStop hook is ``exec: ["sleep", N]`` by default rather than the native
  ``sleep`` action: on 1.30 to 1.33 the native action is a beta feature
  (PodLifecycleSleepAction, on by default, GA only in 1.34) and an API server
  with the gate off drops the field silently, leaving no delay at all; exec
  behaves the same on every version and only needs ``sleep`` in the image
  (present in the Python base image), and if it is missing the kubelet
  records a FailedPreStopHook event instead of failing silently. Set
  ``pre_stop: sleep`` for a distroless image on a cluster with the gate on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mlkit._io import atomic_open
from mlkit.deploy.config import DeployConfig, parse_deploy_config
from mlkit.errors import ConfigError

log = logging.getLogger(__name__)

# Kubernetes kinds in apply order, with the prefix of the file each is written to.
# The numbers are fixed per kind, so a file name never changes meaning when an
# optional object (the Namespace, the NetworkPolicy) is left out.
FILE_PREFIXES = {
    "Namespace": "00",
    "NetworkPolicy": "10",
    "PodDisruptionBudget": "20",
    "ServiceAccount": "30",
    "ConfigMap": "40",
    "Service": "50",
    "Deployment": "60",
    "HorizontalPodAutoscaler": "70",
}
_RENDERED_RE = re.compile(r"[0-9]{2}-[a-z]+\.yaml")

CONFIG_CHECKSUM_ANNOTATION = "checksum/config"
MODEL_SHA_ANNOTATION = "mlkit/model-sha256"
CONTAINER_NAME = "serve"
PORT_NAME = "http"
TMP_VOLUME = "tmp"
RUN_AS_ID = 10001  # the image's user and group (see the Dockerfile)

# Probe periods. The startup probe's failure threshold is derived from the
# configured budget, so that failureThreshold * period covers model loading.
_STARTUP_PERIOD_S = 5
_READINESS_PERIOD_S = 5
_LIVENESS_PERIOD_S = 10


def common_labels(config: DeployConfig) -> dict[str, str]:
    """The labels every object carries (recommended app.kubernetes.io set)."""
    return {
        **selector_labels(config),
        "app.kubernetes.io/version": config.model_sha_short,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "mlkit",
        "app.kubernetes.io/managed-by": "mlkit",
    }


def selector_labels(config: DeployConfig) -> dict[str, str]:
    """The labels that select the service's pods; stable across releases."""
    return {
        "app.kubernetes.io/name": config.name,
        "app.kubernetes.io/instance": config.instance or config.name,
    }


def label_selector(config: DeployConfig) -> str:
    """``selector_labels`` as a ``key=value,...`` string, for kubectl ``-l``
    and the Kubernetes client's ``label_selector``."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(config).items())


def serve_environment(config: DeployConfig) -> dict[str, str]:
    """The server's ``MLKIT_SERVE_*`` settings, as the ConfigMap holds them."""
    serve = config.serve
    values: dict[str, Any] = {
        "MODEL_DIR": serve.model_dir,
        "HOST": "0.0.0.0",  # the pod IP; the network policy restricts who connects
        "PORT": config.port,
        "MAX_BATCH_SIZE": serve.max_batch_size,
        "MAX_WAIT_MS": serve.max_wait_ms,
        "MAX_QUEUE": serve.max_queue,
        "MAX_UPLOAD_BYTES": serve.max_upload_bytes,
        "REQUEST_TIMEOUT_S": serve.request_timeout_s,
        "DRAIN_TIMEOUT_S": serve.drain_timeout_s,
        "MODEL_WORKERS": config.model_workers,
        "TORCH_THREADS": config.torch_threads,
        # The server refuses to serve weights with another sha256.
        "EXPECTED_MODEL_SHA256": config.model_sha256,
    }
    values.update((key.upper(), serve.extra[key]) for key in sorted(serve.extra))
    return {f"MLKIT_SERVE_{key}": _env_value(value) for key, value in values.items()}


def check_serve_environment(config: DeployConfig) -> None:
    """Raise ConfigError when the server would refuse the environment the
    ConfigMap gives it (checked with the server's own settings model)."""
    # Imported here: mlkit.serve is not needed to render or import mlkit.deploy.
    from mlkit.serve.config import load_serve_config

    try:
        load_serve_config(environ=serve_environment(config))
    except ConfigError as exc:
        raise ConfigError(
            f"deploy config {config.namespace}/{config.name}: the server would "
            f"refuse its settings: {exc}"
        ) from exc


def _env_value(value: Any) -> str:
    # 5.0 -> "5": integral floats as integers, which every parser reads.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def config_checksum(config: DeployConfig) -> str:
    """sha256 of the ConfigMap's data. It is the pod template's
    ``checksum/config`` annotation, so a settings change rolls the pods (they
    read the environment only when they start)."""
    payload = json.dumps(serve_environment(config), sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _metadata(config: DeployConfig, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": config.namespace,
        "labels": common_labels(config),
    }


def _namespace(config: DeployConfig) -> dict[str, Any]:
    # Not the app's labels: the namespace outlives releases and may hold more.
    metadata = {"name": config.namespace}
    # The pods meet the "restricted" Pod Security Standard; enforcing it on the
    # namespace keeps anything weaker from running next to them.
    metadata["labels"] = {
        "app.kubernetes.io/part-of": "mlkit",
        "app.kubernetes.io/managed-by": "mlkit",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def _network_policy(config: DeployConfig) -> dict[str, Any]:
    settings = config.network_policy
    peers: list[dict[str, Any]] = []
    for peer in settings.allow_from:
        entry: dict[str, Any] = {}
        if peer.namespace_labels is not None:
            entry["namespaceSelector"] = _match_labels(peer.namespace_labels)
        if peer.pod_labels is not None:
            entry["podSelector"] = _match_labels(peer.pod_labels)
        peers.append(entry)
    peers.extend({"ipBlock": {"cidr": cidr}} for cidr in settings.allow_cidrs)
    ingress: list[dict[str, Any]] = []
    if peers:
        # The rule names the container port: policies see traffic after the
        # Service has translated its port.
        ingress.append(
            {"from": peers, "ports": [{"protocol": "TCP", "port": config.port}]}
        )

    egress: list[dict[str, Any]] = []
    if settings.allow_dns_egress:
        # Limitation: clusters with NodeLocal DNSCache answer DNS from a
        # link-local address on the node, which this rule does not cover.
        egress.append(
            {
                "to": [
                    {
                        "namespaceSelector": _match_labels(
                            {"kubernetes.io/metadata.name": "kube-system"}
                        ),
                        "podSelector": _match_labels({"k8s-app": "kube-dns"}),
                    }
                ],
                "ports": [
                    {"protocol": "UDP", "port": 53},
                    {"protocol": "TCP", "port": 53},
                ],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(config, config.name),
        "spec": {
            "podSelector": _match_labels(selector_labels(config)),
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def _match_labels(labels: Mapping[str, str]) -> dict[str, Any]:
    # An empty selector ({}) matches everything, which is what an empty
    # mapping means in the config.
    return {"matchLabels": dict(labels)} if labels else {}


def _pod_disruption_budget(config: DeployConfig) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(config, config.name),
        "spec": {
            "minAvailable": config.pdb_min_available,
            "selector": _match_labels(selector_labels(config)),
            # A pod that is not ready serves nothing; guarding it would only
            # block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _service_account(config: DeployConfig) -> dict[str, Any]:
    settings = config.service_account
    annotations = dict(sorted(settings.annotations.items()))
    if settings.gcp_service_account is not None:
        annotations["iam.gke.io/gcp-service-account"] = settings.gcp_service_account
    metadata = _metadata(config, config.service_account_name)
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        # The server never calls the Kubernetes API; GKE Workload Identity
        # does not need the token mounted either.
        "automountServiceAccountToken": False,
    }


def _config_map(config: DeployConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config, config.name),
        "data": serve_environment(config),
    }


def _service(config: DeployConfig) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": config.service_type,
        "selector": selector_labels(config),
        "ports": [
            {
                "name": PORT_NAME,
                "protocol": "TCP",
                "port": config.service_port,
                "targetPort": PORT_NAME,
            }
        ],
    }
    if config.service_type == "LoadBalancer":
        # Keep the client's address (no SNAT to a node), so that the network
        # policy's ipBlock rules see it; nodes without a pod fail the load
        # balancer's health check instead of forwarding.
        spec["externalTrafficPolicy"] = "Local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(config, config.name),
        "spec": spec,
    }


def _probe(path: str, *, period_s: int, failures: int, timeout_s: int) -> dict:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": timeout_s,
        "successThreshold": 1,
    }


def _pre_stop(config: DeployConfig) -> dict[str, Any] | None:
    # The sleep lets endpoint removal reach every node's proxy and the load
    # balancers before the server stops accepting connections on SIGTERM.
    if config.pre_stop_sleep_s == 0:
        return None
    if config.pre_stop == "sleep":
        return {"sleep": {"seconds": config.pre_stop_sleep_s}}
    return {"exec": {"command": ["sleep", str(config.pre_stop_sleep_s)]}}


def _container(config: DeployConfig) -> dict[str, Any]:
    resources = config.resources
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image.reference,
        # Tags here are immutable (one per git sha and model), so a cached
        # image is the right one.
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": config.port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": config.name}}],
        # The image sets these too; repeated here because the read-only root
        # filesystem makes them load-bearing: /tmp is the only writable path
        # and the model must never be fetched from the network.
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ],
        "resources": {
            "requests": {
                "cpu": resources.requests.cpu,
                "memory": resources.requests.memory,
            },
            "limits": {"cpu": resources.limits.cpu, "memory": resources.limits.memory},
        },
        # Readiness and liveness start only once the startup probe passed.
        "startupProbe": _probe(
            "/readyz",
            period_s=_STARTUP_PERIOD_S,
            failures=math.ceil(config.startup_budget_s / _STARTUP_PERIOD_S),
            timeout_s=2,
        ),
        "readinessProbe": _probe(
            "/readyz", period_s=_READINESS_PERIOD_S, failures=2, timeout_s=2
        ),
        # Generous: a pod saturated by requests answers slowly, and restarting
        # it then would only shed its queue.
        "livenessProbe": _probe(
            "/healthz", period_s=_LIVENESS_PERIOD_S, failures=3, timeout_s=5
        ),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    pre_stop = _pre_stop(config)
    if pre_stop is not None:
        container["lifecycle"] = {"preStop": pre_stop}
    return container


def _deployment(config: DeployConfig) -> dict[str, Any]:
    selector = selector_labels(config)
    template_annotations = {
        CONFIG_CHECKSUM_ANNOTATION: config_checksum(config),
        MODEL_SHA_ANNOTATION: config.model_sha256,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(config.port),
        "prometheus.io/path": "/metrics",
    }
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": key,
            # A preference: a single-zone or single-node cluster still schedules.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": _match_labels(selector),
            # Spread each revision on its own, so a rollout does not count the
            # old pods that are about to go.
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": config.service_account_name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": config.termination_grace_period_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": spread,
        "containers": [_container(config)],
        # Limitation: no ephemeral-storage request. The sizeLimit evicts a pod
        # whose /tmp outgrows it, but the scheduler reserves no disk for it.
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": config.tmp_size_limit}}
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(config, config.name),
        "spec": {
            # No "replicas": the HorizontalPodAutoscaler owns it.
            "selector": _match_labels(selector),
            "strategy": {
                "type": "RollingUpdate",
                # Never below the current capacity during a rollout.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": max(600, 2 * config.startup_budget_s),
            "template": {
                "metadata": {
                    "labels": common_labels(config),
                    "annotations": template_annotations,
                },
                "spec": pod_spec,
            },
        },
    }


def _scaling_rules(rules: Any) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_s,
        "selectPolicy": rules.select_policy,
        "policies": [
            {"type": p.type, "value": p.value, "periodSeconds": p.period_s}
            for p in rules.policies
        ],
    }


def _horizontal_pod_autoscaler(config: DeployConfig) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(config, config.name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": config.name,
            },
            "minReplicas": config.min_replicas,
            "maxReplicas": config.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": config.target_cpu_utilization,
                        },
                    },
                }
            ],
            "behavior": {
                "scaleUp": _scaling_rules(config.behavior.scale_up),
                "scaleDown": _scaling_rules(config.behavior.scale_down),
            },
        },
    }


def build_objects(config: DeployConfig | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The service's Kubernetes objects, as plain dicts in apply order.

    ``config`` may be a mapping, validated first (ConfigError naming every
    bad field). The Namespace is left out when ``create_namespace`` is false
    and the NetworkPolicy when ``network_policy.enabled`` is false. The same
    config always gives equal dicts.
    """
    config = parse_deploy_config(config)
    check_serve_environment(config)
    if 0 < config.pdb_min_available == config.min_replicas:
        # Limitation: at the minimum scale the budget admits no voluntary
        # eviction, so a node drain waits until the HPA scales up (GKE forces
        # the drain after an hour). min_replicas above pdb_min_available avoids it.
        log.warning(
            "pdb_min_available %d equals min_replicas: node drains wait while the "
            "service runs at its minimum scale",
            config.pdb_min_available,
        )
    objects = []
    if config.create_namespace:
        objects.append(_namespace(config))
    if config.network_policy.enabled:
        objects.append(_network_policy(config))
    objects += [
        _pod_disruption_budget(config),
        _service_account(config),
        _config_map(config),
        _service(config),
        _deployment(config),
        _horizontal_pod_autoscaler(config),
    ]
    log.info(
        "built %d Kubernetes objects for %s/%s (image %s)",
        len(objects),
        config.namespace,
        config.name,
        config.image.reference,
    )
    return objects


def render_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """The objects as one multi-document YAML text, each document starting
    with ``---``, keys in the order the objects hold them."""
    return "".join(_document(obj) for obj in objects)


def _document(obj: Mapping[str, Any]) -> str:
    # width: never fold long strings (image references, annotations).
    return yaml.safe_dump(
        _plain(obj), sort_keys=False, explicit_start=True, width=2**16
    )


def _plain(value: Any) -> Any:
    # safe_dump refuses dict subclasses and tuples' tags would be Python ones.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def object_file_name(obj: Mapping[str, Any]) -> str:
    """``60-deployment.yaml``: the file ``write_objects`` writes ``obj`` to."""
    kind = str(obj["kind"])
    return f"{FILE_PREFIXES.get(kind, '99')}-{kind.lower()}.yaml"


def write_objects(
    objects: Sequence[Mapping[str, Any]], out_dir: str | Path
) -> list[Path]:
    """Write one YAML file per object into ``out_dir``; return the paths in order.

    File names sort in apply order (``kubectl apply -f out_dir`` applies them
    so). Each file is written atomically. Files from an earlier render that
    this one does not produce (``NN-kind.yaml``, e.g. a NetworkPolicy since
    disabled) are removed, so that applying the folder never resurrects an
    object; other files are left alone. Raises ValueError when two objects
    would share a file.
    """
    out_dir = Path(out_dir)
    names = [object_file_name(obj) for obj in objects]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"several objects would be written to {', '.join(duplicates)}; "
            "write_objects takes one object per kind"
        )

    paths = []
    for obj, name in zip(objects, names, strict=True):
        path = out_dir / name
        with atomic_open(path) as fh:
            fh.write(_document(obj))
        paths.append(path)

    for stale in sorted(out_dir.iterdir()):
        if _RENDERED_RE.fullmatch(stale.name) and stale.name not in names:
            log.info("removing %s: the render no longer produces it", stale)
            stale.unlink()
    log.info("wrote %d objects to %s", len(paths), out_dir)
    return paths
