"""The stack configuration: every ``mlkit:<key>`` of a Pulumi stack, validated.

A stack file (``Pulumi.<stack>.yaml``) sets only what differs from the defaults
below; ``infra/README.md`` lists every key. Values arrive from Pulumi as
strings (lists and mappings as JSON text), so they are decoded by the type the
field expects and then checked by :class:`StackConfig`. A bad value, or a key
that names no setting, stops the program before any resource is declared, with
a ConfigError that names the key.

Secrets never pass through this model: the one secret the program reads (the
``kubeconfig`` of an existing cluster) is read by the program with
``pulumi.Config.get_secret`` so that it stays encrypted in the state.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlkit.errors import ConfigError, validate_config

NAMESPACE = "mlkit"
# Keys read by the program but kept out of the model: secrets, see the module
# docstring.
SECRET_KEYS = ("kubeconfig",)

_PRIVATE_RANGES = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
# GCP resource names: lower case letters, digits and hyphens, starting with a
# letter. The name is a prefix of longer names (``<name>-nodes`` is a service
# account id, at most 30 characters), hence the short limit.
_NAME = r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$"
_SHA256 = r"^[0-9a-f]{64}$"


def _network(value: str, *, private: bool) -> str:
    """``value`` as a canonical IPv4 CIDR; ValueError naming what is wrong."""
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR range ({exc})") from None
    if network.version != 4:
        raise ValueError(f"{value!r} is not an IPv4 range")
    if private and not any(network.subnet_of(block) for block in _PRIVATE_RANGES):
        raise ValueError(
            f"{value!r} is not private address space: use a range inside "
            "10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918)"
        )
    return str(network)


class AuthorizedNetwork(BaseModel):
    """An address range allowed to reach the cluster's control plane."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cidr: str
    name: str = Field(default="authorized", min_length=1, max_length=64)

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return _network(value, private=False)


class StackConfig(BaseModel):
    """The settings of one stack; see ``infra/README.md`` for each key.

    ``project`` and ``name`` may be left unset here: :func:`read_stack_config`
    fills them from ``gcp:project`` and the stack name. ``model_sha`` has no
    default on purpose: a deployment always names the gated weights it serves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where, and whether, to create the cluster.
    create_cluster: bool = True
    project: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field(default="europe-west1", pattern=r"^[a-z]+-[a-z]+[0-9]+$")
    zones: list[str] = Field(default_factory=list)
    name: str | None = Field(default=None, pattern=_NAME)
    enable_apis: bool = True
    deletion_protection: bool = False

    # Network.
    subnet_cidr: str = "10.10.0.0/20"
    pods_cidr: str = "10.20.0.0/14"
    services_cidr: str = "10.24.0.0/20"
    master_cidr: str = "172.16.0.16/28"
    master_authorized_networks: list[AuthorizedNetwork] = Field(default_factory=list)
    private_endpoint: bool = False

    # The cluster and its node pool.
    release_channel: Literal["RAPID", "REGULAR", "STABLE", "EXTENDED"] = "REGULAR"
    machine_type: str = Field(
        default="e2-standard-4", pattern=r"^[a-z0-9]+-[a-z0-9-]+$"
    )
    node_min_count: int = Field(default=1, ge=0, le=1000)
    node_max_count: int = Field(default=3, ge=1, le=1000)
    node_disk_size_gb: int = Field(default=50, ge=10, le=65536)
    node_disk_type: Literal["pd-standard", "pd-balanced", "pd-ssd"] = "pd-balanced"
    node_spot: bool = False

    # The image and the model it serves.
    registry_id: str = Field(default="mlkit", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    image_repository: str | None = Field(default=None, min_length=1)
    image_tag: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
    )
    git_sha: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,40}$")
    model_sha: str = Field(pattern=_SHA256)

    # The Kubernetes objects: a deploy config for ``mlkit.deploy`` and the
    # values the stack overrides in it (None keeps the deploy config's value).
    deploy_config: str = Field(default="dev", min_length=1)
    deploy_overrides: dict[str, Any] = Field(default_factory=dict)
    hpa_min_replicas: int | None = Field(default=None, ge=1)
    hpa_max_replicas: int | None = Field(default=None, ge=1)
    hpa_cpu_target: int | None = Field(default=None, ge=1, le=100)
    app_roles: list[str] = Field(default_factory=list)

    # An existing cluster (``create_cluster: false``).
    kubeconfig_context: str | None = Field(default=None, min_length=1)

    @field_validator("subnet_cidr", "pods_cidr", "services_cidr", "master_cidr")
    @classmethod
    def _private_cidr(cls, value: str) -> str:
        return _network(value, private=True)

    @field_validator("master_cidr")
    @classmethod
    def _master_size(cls, value: str) -> str:
        # GKE reserves exactly a /28 for the control plane's private endpoint.
        if ipaddress.ip_network(value).prefixlen != 28:
            raise ValueError(f"{value!r} must be a /28 range (GKE's control plane)")
        return value

    @field_validator("app_roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        for role in value:
            if not re.fullmatch(
                r"(roles|projects/[a-z0-9-]+/roles)/[A-Za-z0-9_.]+", role
            ):
                raise ValueError(f"{role!r} is not an IAM role name (roles/...)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.node_min_count > self.node_max_count:
            raise ValueError(
                f"node_min_count ({self.node_min_count}) must not exceed "
                f"node_max_count ({self.node_max_count})"
            )
        if (
            self.hpa_min_replicas is not None
            and self.hpa_max_replicas is not None
            and self.hpa_min_replicas > self.hpa_max_replicas
        ):
            raise ValueError(
                f"hpa_min_replicas ({self.hpa_min_replicas}) must not exceed "
                f"hpa_max_replicas ({self.hpa_max_replicas})"
            )
        for zone in self.zones:
            if not re.fullmatch(rf"{re.escape(self.region)}-[a-z]", zone):
                raise ValueError(
                    f"zone {zone!r} is not a zone of region {self.region!r} "
                    f"(expected {self.region}-b and the like)"
                )
        ranges = {
            key: ipaddress.ip_network(getattr(self, key))
            for key in ("subnet_cidr", "pods_cidr", "services_cidr", "master_cidr")
        }
        keys = list(ranges)
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                if ranges[first].overlaps(ranges[second]):
                    raise ValueError(
                        f"{first} ({ranges[first]}) overlaps {second} "
                        f"({ranges[second]}); the ranges must be disjoint"
                    )
        if self.create_cluster and self.project is None:
            raise ValueError(
                "project is required to create a cluster: set mlkit:project "
                "(or gcp:project)"
            )
        if self.image_tag is None and self.git_sha is None:
            raise ValueError(
                "git_sha (the commit the image was built from) is required unless "
                "image_tag is set: the image tag is <git_sha>-<model_sha[:12]>"
            )
        if not self.create_cluster and self.image_repository is None:
            raise ValueError(
                "image_repository is required when create_cluster is false (no "
                "Artifact Registry repository is created for an existing cluster)"
            )
        return self

    @property
    def workload_pool(self) -> str:
        """The cluster's Workload Identity pool, ``<project>.svc.id.goog``."""
        return f"{self.project}.svc.id.goog"

    @property
    def registry_url(self) -> str:
        """The docker address of the Artifact Registry repository."""
        return f"{self.region}-docker.pkg.dev/{self.project}/{self.registry_id}"

    @property
    def image_repo(self) -> str:
        """Where the image lives: ``image_repository``, or ``serve`` in the
        stack's registry."""
        return self.image_repository or f"{self.registry_url}/serve"


def _structured(annotation: Any) -> bool:
    """Whether a field holds a list or mapping, which Pulumi passes as JSON."""
    if get_origin(annotation) in (list, dict):
        return True
    return any(_structured(arg) for arg in get_args(annotation))


_STRUCTURED = {
    name
    for name, field in StackConfig.model_fields.items()
    if _structured(field.annotation)
}


def parse_stack_config(
    values: Mapping[str, Any], *, stack: str, source: str = "stack config"
) -> StackConfig:
    """A validated :class:`StackConfig` from ``values`` (keys without the
    ``mlkit:`` prefix, values as Pulumi gives them: strings, lists and mappings
    as JSON text).

    ``stack`` names the default ``name`` (``mlkit-<stack>``). ConfigError names
    ``source`` and every bad or unknown key.
    """
    data: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECRET_KEYS:
            continue
        if key in _STRUCTURED and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{source}: {NAMESPACE}:{key} must be a list or mapping in "
                    f"YAML or JSON, got {value!r} ({exc.msg})"
                ) from None
        data[key] = value
    data.setdefault("name", f"mlkit-{stack}")
    return validate_config(StackConfig, data, what="mlkit stack config", source=source)
