"""The Kubernetes side: a provider for the cluster, and one Pulumi resource per
object that ``mlkit.deploy.build_objects`` renders.

The objects are the same dicts ``mlkit deploy render`` writes; this module only
maps each ``apiVersion``/``kind`` to its typed ``pulumi_kubernetes`` class and
orders them. It never adds to or edits the spec, with one exception: the
ServiceAccount's ``iam.gke.io/gcp-service-account`` annotation becomes the
Google service account's ``email`` output, which holds the same address and
makes Pulumi create the account before the ServiceAccount that names it.

Typed resources rather than ``pulumi_kubernetes.yaml``: each object is a
resource of its own in the state and in a preview (and under test mocks,
where the YAML components' children never appear).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from mlkit.errors import ConfigError

log = logging.getLogger(__name__)

GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
# What gke-gcloud-auth-plugin is: the credential helper kubectl and the
# provider run for a fresh token on every connection; no key is stored.
AUTH_PLUGIN = "gke-gcloud-auth-plugin"
_INSTALL_HINT = (
    "Install gke-gcloud-auth-plugin (gcloud components install "
    "gke-gcloud-auth-plugin) to reach the cluster."
)

_CLASSES: dict[tuple[str, str], type[pulumi.CustomResource]] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): (
        k8s.autoscaling.v2.HorizontalPodAutoscaler
    ),
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
# Objects that must exist before an object of the key's kind, beyond its
# namespace, when the list holds them earlier: pods start with their settings
# and identity in place, and the autoscaler finds its target. (The network
# policy and disruption budget come before the pods, in mlkit.deploy's order.)
_AFTER = {
    "Deployment": ("ConfigMap", "ServiceAccount"),
    "HorizontalPodAutoscaler": ("Deployment",),
}
_CLUSTER_SCOPED = {"Namespace"}


def supported_kinds() -> list[str]:
    return sorted(f"{api}/{kind}" for api, kind in _CLASSES)


def gke_kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig for a GKE cluster whose credentials come from
    ``gke-gcloud-auth-plugin`` at each connection: it holds the address and
    the CA certificate, which are not secret, and no token or key."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": name,
                    "cluster": {
                        "server": f"https://{endpoint}",
                        "certificate-authority-data": ca_certificate,
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
            "users": [
                {
                    "name": name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": AUTH_PLUGIN,
                            "installHint": _INSTALL_HINT,
                            "provideClusterInfo": True,
                            "interactiveMode": "Never",
                        }
                    },
                }
            ],
        },
        sort_keys=False,
    )


def gke_provider(cluster: Any) -> k8s.Provider:
    """A provider for a ``gcp.container.Cluster``.

    ``cluster_identifier`` is the cluster's id, so that a new endpoint address
    or a rotated CA updates the provider instead of replacing it (which would
    replace every object it manages).
    """
    kubeconfig = pulumi.Output.all(
        cluster.name, cluster.endpoint, cluster.master_auth.cluster_ca_certificate
    ).apply(lambda args: gke_kubeconfig(*args))
    return k8s.Provider(
        "gke",
        kubeconfig=kubeconfig,
        cluster_identifier=cluster.id,
        enable_server_side_apply=True,
    )


def existing_cluster_provider(
    kubeconfig: pulumi.Input[str] | None, context: str | None
) -> k8s.Provider:
    """A provider for a cluster this stack does not create: ``kubeconfig`` (the
    contents or a path, from a secret config value) and/or a ``context`` of it
    (or of the ambient kubeconfig when ``kubeconfig`` is None)."""
    return k8s.Provider(
        "cluster", kubeconfig=kubeconfig, context=context, enable_server_side_apply=True
    )


@dataclass
class AppliedObjects:
    """The Pulumi resources of the rendered objects, by ``(kind, name)``."""

    resources: dict[tuple[str, str], pulumi.CustomResource] = field(
        default_factory=dict
    )

    def get(self, kind: str, name: str | None = None) -> pulumi.CustomResource:
        """The resource of ``kind`` (and ``name`` when several share the kind)."""
        matches = [
            res
            for (k, n), res in self.resources.items()
            if k == kind and name in (None, n)
        ]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} objects of kind {kind!r} named {name!r}")
        return matches[0]


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _resource_args(obj: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The object's top-level fields as keyword arguments of ``cls``
    (``automountServiceAccountToken`` -> ``automount_service_account_token``);
    nested fields keep Kubernetes' camelCase, which the provider takes as is.
    ``status`` is the cluster's to write and is dropped."""
    args = {}
    accepted = inspect.signature(cls._internal_init).parameters  # type: ignore[attr-defined]
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        name = _snake(key)
        if name not in accepted:
            raise ConfigError(
                f"{obj['kind']} {obj.get('metadata', {}).get('name')!r}: field "
                f"{key!r} is not one pulumi_kubernetes accepts for this kind"
            )
        args[name] = value
    return args


def _with_gsa(obj: Mapping[str, Any], gsa_email: pulumi.Input[str]) -> dict[str, Any]:
    metadata = dict(obj["metadata"])
    annotations = dict(metadata.get("annotations") or {})
    annotations[GSA_ANNOTATION] = gsa_email
    metadata["annotations"] = annotations
    return {**obj, "metadata": metadata}


@dataclass(frozen=True)
class PlannedObject:
    """One object ready to declare: its class, logical name, keyword
    arguments, and the ``(kind, name)`` of the objects it must follow."""

    kind: str
    name: str
    logical_name: str
    cls: type
    args: dict[str, Any]
    after: tuple[tuple[str, str], ...]


def plan_objects(
    objects: Sequence[Mapping[str, Any]], *, gsa_email: pulumi.Input[str] | None = None
) -> list[PlannedObject]:
    """Check every object and work out its order, before anything is declared.

    An object follows the earlier Namespace it lives in, and the earlier
    objects of the kinds ``_AFTER`` names. ``gsa_email``, when given, becomes the
    ServiceAccount's Workload Identity annotation. Raises ConfigError for a
    kind without a typed class here (``supported_kinds()``), a top-level field
    the class does not take, and two objects of the same kind and name.
    """
    plan: list[PlannedObject] = []
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name"))
        cls = _CLASSES.get((api_version, kind))
        if cls is None:
            raise ConfigError(
                f"object {kind!r} {name!r} ({api_version}): no Pulumi resource class "
                f"for this kind; supported: {', '.join(supported_kinds())}"
            )
        if (kind, name) in seen:
            raise ConfigError(f"two {kind} objects are named {name!r}")
        seen.add((kind, name))
        if kind == "ServiceAccount" and gsa_email is not None:
            obj = _with_gsa(obj, gsa_email)

        namespace = metadata.get("namespace")
        after = [
            (p.kind, p.name)
            for p in plan
            if (p.kind == "Namespace" and p.name == namespace)
            or p.kind in _AFTER.get(kind, ())
        ]
        logical = name if kind in _CLUSTER_SCOPED else f"{namespace}/{name}"
        plan.append(
            PlannedObject(
                kind=kind,
                name=name,
                logical_name=logical,
                cls=cls,
                args=_resource_args(obj, cls),
                after=tuple(after),
            )
        )
    return plan


def apply_objects(
    objects: Sequence[Mapping[str, Any]],
    provider: k8s.Provider,
    *,
    gsa_email: pulumi.Input[str] | None = None,
    depends_on: Sequence[pulumi.Resource] = (),
) -> AppliedObjects:
    """One typed resource per object, in the given (apply) order, each after
    the objects ``plan_objects`` says and after ``depends_on`` (the node pool:
    a Deployment waits for nodes to run on). Raises ConfigError as
    ``plan_objects`` does, before declaring anything."""
    applied = AppliedObjects()
    for planned in plan_objects(objects, gsa_email=gsa_email):
        needs = [*depends_on, *(applied.resources[key] for key in planned.after)]
        applied.resources[(planned.kind, planned.name)] = planned.cls(
            planned.logical_name,
            **planned.args,
            opts=pulumi.ResourceOptions(provider=provider, depends_on=needs),
        )
    log.info("declared %d Kubernetes objects", len(applied.resources))
    return applied


def service_url(service: Any, *, name: str, namespace: str, port: int) -> pulumi.Output:
    """Where the service answers: ``http://<address>[:port]`` of its load
    balancer once it has one, else its cluster-internal DNS name."""
    internal = f"http://{name}.{namespace}.svc.cluster.local" + (
        "" if port == 80 else f":{port}"
    )

    def pick(status: Any) -> str:
        ingress = ((status or {}).get("load_balancer") or {}).get("ingress") or []
        for entry in ingress:
            host = entry.get("ip") or entry.get("hostname")
            if host:
                return f"http://{host}" + ("" if port == 80 else f":{port}")
        return internal

    return service.status.apply(pick)
