"""Run the program with Pulumi's test mocks: no engine, no CLI, no cloud.

``pulumi.runtime.set_mocks`` replaces the engine with :class:`RecordingMocks`,
which records every resource the program declares and answers with its
inputs plus the few outputs a real provider would compute and the program
reads (a service account's email, the cluster's endpoint and CA, a load
balancer's address). :func:`run_stack` runs the program for a stack's config;
:func:`preview_report` turns a run into the JSON that ``infra/mock_preview.py``
writes. The tests use the same functions.

Limitation: the mocks check nothing the providers would: a value that GCP or
the Kubernetes API server would refuse passes here. ``mlkit.deploy``'s tests
validate the Kubernetes objects against the OpenAPI schemas; ``pulumi preview``
against a real project is the check for the GCP side.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

from mlkit.errors import ConfigError

from .config import NAMESPACE

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parents[1]
# Shown instead of real values that only CI knows (the gated model, the commit).
PLACEHOLDER_MODEL_SHA = "0" * 64
PLACEHOLDER_GIT_SHA = "0000000"
MOCK_ENDPOINT = "192.0.2.10"  # TEST-NET-1: documentation addresses
MOCK_LOAD_BALANCER_IP = "192.0.2.20"
_REDACTED = "[secret]"

# The inputs worth showing per resource type, as dotted paths (engine names).
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "pulumi:providers:gcp": ("project", "region"),
    "pulumi:providers:kubernetes": ("context", "clusterIdentifier"),
    "gcp:projects/service:Service": ("service",),
    "gcp:compute/network:Network": ("name", "autoCreateSubnetworks", "routingMode"),
    "gcp:compute/subnetwork:Subnetwork": (
        "name",
        "region",
        "ipCidrRange",
        "privateIpGoogleAccess",
        "secondaryIpRanges",
    ),
    "gcp:compute/router:Router": ("name", "region"),
    "gcp:compute/routerNat:RouterNat": (
        "name",
        "natIpAllocateOption",
        "sourceSubnetworkIpRangesToNat",
    ),
    "gcp:artifactregistry/repository:Repository": (
        "repositoryId",
        "location",
        "format",
        "dockerConfig.immutableTags",
    ),
    "gcp:serviceaccount/account:Account": ("accountId",),
    "gcp:projects/iAMMember:IAMMember": ("role", "member"),
    "gcp:serviceaccount/iAMMember:IAMMember": ("role", "member"),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": ("role", "member"),
    "gcp:container/cluster:Cluster": (
        "name",
        "location",
        "nodeLocations",
        "releaseChannel.channel",
        "privateClusterConfig.enablePrivateNodes",
        "privateClusterConfig.enablePrivateEndpoint",
        "privateClusterConfig.masterIpv4CidrBlock",
        "masterAuthorizedNetworksConfig.cidrBlocks",
        "workloadIdentityConfig.workloadPool",
        "networkingMode",
        "datapathProvider",
        "enableShieldedNodes",
        "removeDefaultNodePool",
        "deletionProtection",
    ),
    "gcp:container/nodePool:NodePool": (
        "name",
        "autoscaling.totalMinNodeCount",
        "autoscaling.totalMaxNodeCount",
        "nodeConfig.machineType",
        "nodeConfig.diskSizeGb",
        "nodeConfig.spot",
        "nodeConfig.workloadMetadataConfig.mode",
        "nodeConfig.shieldedInstanceConfig.enableSecureBoot",
    ),
    "kubernetes:apps/v1:Deployment": (
        "metadata.namespace",
        "metadata.name",
        "spec.template.spec.containers.0.image",
        "spec.template.spec.serviceAccountName",
    ),
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": (
        "metadata.namespace",
        "metadata.name",
        "spec.scaleTargetRef.name",
        "spec.minReplicas",
        "spec.maxReplicas",
        "spec.metrics.0.resource.target.averageUtilization",
    ),
    "kubernetes:core/v1:Service": (
        "metadata.namespace",
        "metadata.name",
        "spec.type",
        "spec.ports.0.port",
    ),
    "kubernetes:core/v1:ServiceAccount": (
        "metadata.namespace",
        "metadata.name",
        "metadata.annotations",
    ),
}
_K8S_DEFAULT = ("metadata.namespace", "metadata.name")


@dataclass(frozen=True)
class Declared:
    """One resource the program declared: its type token, logical name and
    inputs as the engine received them (camelCase, numbers as floats)."""

    type: str
    name: str
    inputs: dict[str, Any]


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that record each declared resource and compute plausible outputs."""

    def __init__(self) -> None:
        self.declared: list[Declared] = []
        self._project = "mock-project"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        self.declared.append(Declared(type=args.typ, name=args.name, inputs=inputs))
        if args.typ == "pulumi:providers:gcp" and inputs.get("project"):
            self._project = inputs["project"]
        return f"{args.name}-id", {**inputs, **self._computed(args.typ, inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        # The program calls no provider function: no result, no failures.
        return {}, []

    def _computed(self, typ: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{self._project}.iam.gserviceaccount.com"
            return {
                "email": email,
                "member": f"serviceAccount:{email}",
                "name": f"projects/{self._project}/serviceAccounts/{email}",
            }
        if typ == "gcp:container/cluster:Cluster":
            ca = base64.b64encode(b"mock cluster CA").decode("ascii")
            return {
                "endpoint": MOCK_ENDPOINT,
                "masterAuth": {"clusterCaCertificate": ca},
            }
        if typ == "gcp:artifactregistry/repository:Repository":
            return {"name": inputs.get("repositoryId")}
        if typ == "kubernetes:core/v1:Service":
            spec = inputs.get("spec") or {}
            if spec.get("type") == "LoadBalancer":
                ingress = [{"ip": MOCK_LOAD_BALANCER_IP}]
                return {"status": {"loadBalancer": {"ingress": ingress}}}
            return {"status": {"loadBalancer": {}}}
        return {}


@dataclass
class MockRun:
    """The outcome of :func:`run_stack`."""

    stack: str
    declared: list[Declared]
    outputs: dict[str, Any]
    result: Any  # program.StackResult

    def of_type(self, typ: str) -> list[Declared]:
        return [d for d in self.declared if d.type == typ]

    def one(self, typ: str) -> Declared:
        """The single resource of ``typ``; AssertionError when not exactly one."""
        found = self.of_type(typ)
        assert len(found) == 1, f"{len(found)} resources of type {typ}"
        return found[0]


def stack_file_config(stack: str, infra_dir: Path = INFRA_DIR) -> dict[str, str]:
    """The config of ``Pulumi.<stack>.yaml`` as the engine passes it to the
    program: ``namespace:key`` -> string, lists and mappings as JSON.

    Encrypted (``secure:``) values cannot be read without the stack's key and
    are left out. Raises ConfigError for a missing or malformed stack file.
    """
    path = infra_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such stack file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    config = (data.get("config") or {}) if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping under 'config'")
    values = {}
    for key, value in config.items():
        full = key if ":" in key else f"{NAMESPACE}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        values[full] = value if isinstance(value, str) else json.dumps(value)
    return values


def run_stack(
    config: Mapping[str, str],
    *,
    stack: str = "dev",
    secret_keys: Iterable[str] = (),
) -> MockRun:
    """Run the program under mocks with ``config`` (``namespace:key`` ->
    string) as the stack's config; ``secret_keys`` are the keys stored as
    secrets. Exceptions of the program (ConfigError) propagate."""
    from .program import run

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=NAMESPACE, stack=stack, preview=False)
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))
    captured: dict[str, Any] = {}

    @pulumi.runtime.test
    def declare() -> pulumi.Output:
        result = run()
        captured["result"] = result
        return pulumi.Output.all(**result.outputs).apply(
            lambda outputs: captured.update(outputs=dict(outputs))
        )

    try:
        declare()
    finally:
        pulumi.runtime.set_all_config({}, [])
    return MockRun(
        stack=stack,
        declared=mocks.declared,
        outputs=captured["outputs"],
        result=captured["result"],
    )


def _path(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def _plain_number(value: Any) -> Any:
    # The engine carries every number as a float; 3.0 reads better as 3.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_number(v) for v in value]
    return value


def key_inputs(declared: Declared) -> dict[str, Any]:
    """The inputs of ``declared`` worth showing (``KEY_INPUTS``), never a
    kubeconfig."""
    paths = KEY_INPUTS.get(declared.type)
    if paths is None:
        paths = _K8S_DEFAULT if declared.type.startswith("kubernetes:") else ()
    shown = {}
    for dotted in paths:
        value = _path(declared.inputs, dotted)
        if value is not None:
            shown[dotted] = _plain_number(value)
    return shown


def full_inputs(declared: Declared) -> dict[str, Any]:
    inputs = _plain_number(declared.inputs)
    if "kubeconfig" in inputs:
        inputs["kubeconfig"] = _REDACTED
    return inputs


def _report_order(outcome: MockRun) -> Any:
    """A sort key: providers, then Google Cloud resources by type and name,
    then the Kubernetes objects in apply order. The engine registers resources
    as their inputs resolve, in an order that varies from run to run."""
    applied = list(outcome.result.objects.resources)

    def key(declared: Declared) -> tuple:
        if declared.type.startswith("pulumi:providers:"):
            return (0, 0, declared.type, declared.name)
        if declared.type.startswith("kubernetes:"):
            kind = declared.inputs.get("kind")
            name = (declared.inputs.get("metadata") or {}).get("name")
            position = applied.index((kind, name)) if (kind, name) in applied else 0
            return (2, position, declared.type, declared.name)
        return (1, 0, declared.type, declared.name)

    return key


def preview_report(
    stack: str,
    *,
    overrides: Mapping[str, str] | None = None,
    full: bool = False,
    infra_dir: Path = INFRA_DIR,
) -> dict[str, Any]:
    """Run stack ``stack`` (its stack file, then ``overrides`` on top) under
    mocks; the declared resources and outputs as a JSON-ready dict.

    ``mlkit:model_sha`` and ``mlkit:git_sha`` are set by CI for a real
    deployment; when neither the stack file nor ``overrides`` has them, the
    report uses placeholders and lists them under ``placeholders``.
    """
    config = stack_file_config(stack, infra_dir)
    config.update(
        {
            (k if ":" in k else f"{NAMESPACE}:{k}"): v
            for k, v in (overrides or {}).items()
        }
    )
    placeholders = {}
    for key, value in (
        ("model_sha", PLACEHOLDER_MODEL_SHA),
        ("git_sha", PLACEHOLDER_GIT_SHA),
    ):
        full_key = f"{NAMESPACE}:{key}"
        if full_key not in config and not (
            key == "git_sha" and f"{NAMESPACE}:image_tag" in config
        ):
            config[full_key] = value
            placeholders[full_key] = value
    outcome = run_stack(config, stack=stack)
    resources = []
    for declared in sorted(outcome.declared, key=_report_order(outcome)):
        entry: dict[str, Any] = {"type": declared.type, "name": declared.name}
        entry["key_inputs"] = key_inputs(declared)
        if full:
            entry["inputs"] = full_inputs(declared)
        resources.append(entry)
    log.info("stack %s declares %d resources under mocks", stack, len(resources))
    return {
        "stack": stack,
        "placeholders": placeholders,
        "resource_count": len(resources),
        "counts_by_type": dict(sorted(Counter(r["type"] for r in resources).items())),
        "resources": resources,
        "outputs": _plain_number(outcome.outputs),
    }
