"""What the inference service's Kubernetes objects are built from.

``DeployConfig`` is the single description of a deployment: the image, the
gated model it serves, replicas and autoscaling, resources, the server's
settings, shutdown timing, probes, the network policy and the service account.
``mlkit.deploy.objects`` turns it into Kubernetes objects; nothing else writes
a Kubernetes spec. Packaged configs (``dev``, ``prod``) hold the defaults of
each environment; the image and the model sha256 are always given by the
caller, because they change with every release.

Everything that Kubernetes would only reject at apply time (or, worse, accept
and misbehave) is checked here: image references that are not tied to the
gated model, requests above limits, a grace period too short for the drain.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mlkit._config import merge_settings, packaged_names, read_config
from mlkit.errors import ConfigError, validate_config

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"[0-9a-f]{64}")
# How many hex digits of the model sha256 an image tag and the version label carry.
SHORT_SHA_LEN = 12

# Docker's reference grammar, simplified: an optional registry host (with port),
# then lowercase path components separated by "/".
_REPOSITORY_RE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# RFC 1035 label: what Service names must be (and so every object's name here).
_DNS_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_KEY_RE = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_GCP_SA_RE = re.compile(
    r"[a-z][-a-z0-9]{4,28}[a-z0-9]@[a-z][-a-z0-9]*\.iam\.gserviceaccount\.com"
)

# Kubernetes resource quantity: a decimal number, then an SI or binary suffix,
# or a decimal exponent.
_QUANTITY_RE = re.compile(
    r"(?P<number>\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12}
_DECIMAL |= {"P": 15, "E": 18}


def parse_quantity(value: str | int | float) -> Decimal:
    """The value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"1Gi"`` ->
    1073741824), exactly.

    Raises ConfigError for anything Kubernetes would not accept as a
    non-negative quantity.
    """
    text = str(value).strip()
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"not a Kubernetes quantity: {value!r}; expected e.g. 500m, 2, 512Mi, 1Gi"
        )
    number, suffix = Decimal(match["number"]), match["suffix"]
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    try:
        return number.scaleb(int(suffix[1:]))
    except (InvalidOperation, ValueError) as exc:  # pragma: no cover - regex-checked
        raise ConfigError(f"not a Kubernetes quantity: {value!r}") from exc


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a Kubernetes quantity, got {value!r}")
    text = str(value).strip()
    try:
        amount = parse_quantity(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if amount <= 0:
        raise ValueError(f"quantity must be positive, got {value!r}")
    return text


Quantity = Annotated[str, BeforeValidator(_quantity)]


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL_KEY_RE.fullmatch(key) or len(key.rsplit("/", 1)[-1]) > 63:
            raise ValueError(f"not a valid Kubernetes label key: {key!r}")
        if not _LABEL_VALUE_RE.fullmatch(value):
            raise ValueError(f"not a valid Kubernetes label value: {value!r}")
    return labels


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageConfig(_Model):
    """A container image: ``repository`` plus a ``tag``, a ``digest`` or both.

    ``latest`` and untagged references are refused: a deployment must name
    exactly the image it runs, so that a rollback or a new node pulls the same
    bytes. Whether the tag belongs to the gated model is checked by DeployConfig,
    which knows the model's sha256.
    """

    repository: str
    tag: str | None = None
    digest: str | None = None

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not _REPOSITORY_RE.fullmatch(value):
            raise ValueError(
                f"not an image repository: {value!r}; expected e.g. "
                "europe-docker.pkg.dev/PROJECT/mlkit/serve (no tag or digest)"
            )
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.lower() == "latest":
            raise ValueError(
                "the tag 'latest' is refused: it does not say which image runs; "
                "use the gated tag <git sha>-<model sha[:12]> or a digest"
            )
        if not _TAG_RE.fullmatch(value):
            raise ValueError(f"not an image tag: {value!r}")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _DIGEST_RE.fullmatch(value):
            raise ValueError(f"expected sha256:<64 hex>, got {value!r}")
        return value

    @model_validator(mode="after")
    def _pinned(self) -> ImageConfig:
        if self.tag is None and self.digest is None:
            raise ValueError(
                f"image {self.repository!r} has no tag and no digest; an untagged "
                "image means 'latest'"
            )
        return self

    @property
    def reference(self) -> str:
        """``repository:tag``, ``repository@digest`` or ``repository:tag@digest``."""
        ref = self.repository
        if self.tag is not None:
            ref += f":{self.tag}"
        if self.digest is not None:
            ref += f"@{self.digest}"
        return ref


def parse_image_reference(reference: str) -> dict[str, str | None]:
    """Split ``REPO[:TAG][@DIGEST]`` into ``repository``, ``tag`` and ``digest``.

    A colon only starts a tag in the last path component, so a registry port
    (``localhost:5000/serve``) is part of the repository. The parts are not
    validated here; ImageConfig does that.
    """
    rest, _, digest = reference.strip().partition("@")
    head, slash, last = rest.rpartition("/")
    name, colon, tag = last.partition(":")
    return {
        "repository": f"{head}{slash}{name}",
        "tag": tag if colon else None,
        "digest": digest or None,
    }


class ScalingPolicy(_Model):
    """At most ``value`` pods (``Pods``) or percent of the current replicas
    (``Percent``) added or removed per ``period_s`` seconds."""

    type: Literal["Pods", "Percent"]
    value: int = Field(ge=1)
    period_s: int = Field(ge=1, le=1800)


class ScalingRules(_Model):
    """One direction of the HPA's behavior (autoscaling/v2 semantics).

    ``stabilization_window_s``: the HPA acts on the most conservative
    recommendation of this window (the highest when scaling down), which damps
    flapping. ``select_policy``: which policy wins when several allow different
    changes (``Max`` the largest, ``Min`` the smallest, ``Disabled`` none).
    """

    stabilization_window_s: int = Field(default=0, ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    policies: tuple[ScalingPolicy, ...] = Field(min_length=1)


def _default_scale_up() -> ScalingRules:
    # React to a burst at once: up to 4 pods or a doubling every 15 s, the larger.
    return ScalingRules(
        stabilization_window_s=0,
        select_policy="Max",
        policies=(
            ScalingPolicy(type="Pods", value=4, period_s=15),
            ScalingPolicy(type="Percent", value=100, period_s=15),
        ),
    )


def _default_scale_down() -> ScalingRules:
    # Remove pods only after 5 minutes of lower load, then as fast as allowed.
    return ScalingRules(
        stabilization_window_s=300,
        select_policy="Max",
        policies=(ScalingPolicy(type="Percent", value=100, period_s=15),),
    )


class HpaBehavior(_Model):
    """How fast the HorizontalPodAutoscaler may add and remove pods."""

    scale_up: ScalingRules = Field(default_factory=_default_scale_up)
    scale_down: ScalingRules = Field(default_factory=_default_scale_down)


class ResourceAmounts(_Model):
    """CPU (cores: ``500m``, ``2``) and memory (bytes: ``512Mi``, ``2Gi``)."""

    cpu: Quantity
    memory: Quantity


class Resources(_Model):
    """Container requests (what the scheduler reserves, and what the HPA's CPU
    utilization is relative to) and limits (CPU is throttled above its limit;
    the container is killed above its memory limit)."""

    requests: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="1", memory="1Gi")
    )
    limits: ResourceAmounts = Field(
        default_factory=lambda: ResourceAmounts(cpu="2", memory="2Gi")
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        for name in ("cpu", "memory"):
            request = getattr(self.requests, name)
            limit = getattr(self.limits, name)
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"requests.{name} {request} is above limits.{name} {limit}; "
                    "Kubernetes rejects such a pod"
                )
        return self


class ServeSettings(_Model):
    """The server's settings, passed as ``MLKIT_SERVE_*`` environment variables.

    The bounds are the server's own (``mlkit.serve.config``), so that a value
    it would refuse at start-up is refused here, before anything is deployed.
    ``model_workers`` None means one model worker per CPU of the limit
    (rounded up), ``torch_threads`` None the CPUs shared among the workers:
    the server's own defaults, but counted from the CPU limit, since a
    container sees every CPU of its node (more threads than the limit only
    get throttled). ``extra`` holds any other server setting
    by its field name (``min_confidence``, ``decode_workers``, ``log_level``);
    build_objects checks all of them with the server's validation.
    """

    model_dir: str = "/models/model"
    max_batch_size: int = Field(default=16, ge=1, le=256)
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000, allow_inf_nan=False)
    max_queue: int = Field(default=256, ge=1, le=100_000)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=256 << 20)
    request_timeout_s: float = Field(default=30.0, gt=0, le=600, allow_inf_nan=False)
    drain_timeout_s: float = Field(default=20.0, gt=0, le=3600, allow_inf_nan=False)
    model_workers: int | None = Field(default=None, ge=1, le=64)
    torch_threads: int | None = Field(default=None, ge=1, le=256)
    extra: dict[str, str | int | float] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        # host, port and the model sha are the deployment's, not free settings.
        reserved = set(cls.model_fields) | {"host", "port", "expected_model_sha256"}
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise ValueError(
                    f"{key!r} is not a server setting name (lowercase field name)"
                )
            if key in reserved:
                raise ValueError(f"{key!r} is set by its own key, not through extra")
        return value


class Peer(_Model):
    """Pods allowed to reach the service: those in namespaces with
    ``namespace_labels`` and/or with ``pod_labels``. Only ``pod_labels`` means
    pods of the service's own namespace (Kubernetes' rule); an empty mapping
    matches everything."""

    namespace_labels: dict[str, str] | None = None
    pod_labels: dict[str, str] | None = None

    @field_validator("namespace_labels", "pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return value if value is None else _check_labels(value)

    @model_validator(mode="after")
    def _something(self) -> Peer:
        if self.namespace_labels is None and self.pod_labels is None:
            raise ValueError("a peer needs namespace_labels, pod_labels or both")
        return self


class NetworkPolicySettings(_Model):
    """Who may connect to the serving port, and what the pods may reach.

    Ingress is allowed only on the serving port, from ``allow_from`` (default:
    every pod of the cluster, in any namespace) and from ``allow_cidrs``
    (address ranges outside the cluster, e.g. a load balancer's clients).
    Egress is denied entirely: the server reads its model from the image and
    calls nothing. ``allow_dns_egress`` opens port 53 to kube-dns, for a server
    that would resolve names.
    """

    enabled: bool = True
    allow_from: tuple[Peer, ...] = (Peer(namespace_labels={}),)
    allow_cidrs: tuple[str, ...] = ()
    allow_dns_egress: bool = False

    @field_validator("allow_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR: {cidr!r}") from exc
        return value


class ServiceAccountSettings(_Model):
    """The pods' service account. ``gcp_service_account`` binds it to a Google
    service account through GKE Workload Identity (the
    ``iam.gke.io/gcp-service-account`` annotation); None binds nothing."""

    name: str | None = None  # default: the deployment's name
    gcp_service_account: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("gcp_service_account")
    @classmethod
    def _gsa(cls, value: str | None) -> str | None:
        if value is not None and not _GCP_SA_RE.fullmatch(value):
            raise ValueError(
                f"expected NAME@PROJECT.iam.gserviceaccount.com, got {value!r}"
            )
        return value


class DeployConfig(_Model):
    """Everything the inference service's Kubernetes objects are built from.

    Validation refuses, naming the field: an image that is not pinned to the
    gated model (``latest``, untagged, or a tag without the first 12 hex of
    ``model_sha256``; a digest is accepted as pinned), ``min_replicas`` above
    ``max_replicas``, a CPU target outside 1..100 %, requests above limits, a
    grace period that does not exceed the preStop sleep plus the drain
    timeout, and a PodDisruptionBudget that could never be satisfied.
    """

    name: str = "mlkit-serve"
    namespace: str = "mlkit"
    instance: str | None = None  # app.kubernetes.io/instance; default: name
    create_namespace: bool = True
    image: ImageConfig
    model_sha256: str
    port: int = Field(default=8080, ge=1024, le=65535)
    service_port: int = Field(default=80, ge=1, le=65535)
    service_type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=5, ge=1)
    target_cpu_utilization: int = Field(default=60, ge=1, le=100)
    behavior: HpaBehavior = Field(default_factory=HpaBehavior)
    resources: Resources = Field(default_factory=Resources)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pre_stop: Literal["exec", "sleep"] = "exec"
    pre_stop_sleep_s: int = Field(default=5, ge=0, le=300)
    termination_grace_period_s: int = Field(default=40, ge=1)
    startup_budget_s: int = Field(default=120, ge=5, le=3600)
    tmp_size_limit: Quantity = "1Gi"
    pdb_min_available: int = Field(default=1, ge=0)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    service_account: ServiceAccountSettings = Field(
        default_factory=ServiceAccountSettings
    )

    @field_validator("name", "namespace", "instance")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid name: lowercase letters, digits and "
                "'-', starting with a letter, at most 63 characters"
            )
        return value

    @field_validator("model_sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not SHA256_RE.fullmatch(value):
            raise ValueError(f"expected 64 lowercase hex digits, got {value!r}")
        return value

    @field_validator("image", mode="before")
    @classmethod
    def _image_string(cls, value: Any) -> Any:
        return parse_image_reference(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> DeployConfig:
        # Every inconsistency at once, each naming its fields, so that one
        # edit fixes the file.
        problems = []
        short = self.model_sha256[:SHORT_SHA_LEN]
        if self.image.digest is None and short not in (self.image.tag or ""):
            problems.append(
                f"image tag {self.image.tag!r} does not carry the model sha "
                f"{short}; tag the image <git sha>-{short} (mlkit.deploy."
                "gated_image_tag) or give a digest"
            )
        if self.min_replicas > self.max_replicas:
            problems.append(
                f"min_replicas {self.min_replicas} is above max_replicas "
                f"{self.max_replicas}"
            )
        shutdown = self.pre_stop_sleep_s + self.serve.drain_timeout_s
        if self.termination_grace_period_s <= shutdown:
            problems.append(
                f"termination_grace_period_s {self.termination_grace_period_s} must "
                f"exceed pre_stop_sleep_s + serve.drain_timeout_s = {shutdown:g}, "
                "or Kubernetes kills the pod before in-flight requests finish"
            )
        if self.pdb_min_available > self.min_replicas:
            problems.append(
                f"pdb_min_available {self.pdb_min_available} is above min_replicas "
                f"{self.min_replicas}: at the minimum scale no pod could ever be "
                "evicted, which blocks node drains and upgrades"
            )
        policy = self.network_policy
        if (
            self.service_type == "LoadBalancer"
            and policy.enabled
            and not policy.allow_cidrs
        ):
            problems.append(
                "service_type LoadBalancer needs network_policy.allow_cidrs "
                "(the clients' address ranges; 0.0.0.0/0 for anyone): the "
                "network policy admits cluster pods only and would drop "
                "traffic from outside"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def model_sha_short(self) -> str:
        """The first 12 hex of the model sha256 (the version label, the tag)."""
        return self.model_sha256[:SHORT_SHA_LEN]

    @property
    def service_account_name(self) -> str:
        return self.service_account.name or self.name

    @property
    def cpus(self) -> int:
        """The CPU limit rounded up: the CPUs the server plans its threads for."""
        return max(1, math.ceil(parse_quantity(self.resources.limits.cpu)))

    @property
    def model_workers(self) -> int:
        """The server's model workers: the setting, else one per CPU."""
        return self.serve.model_workers or self.cpus

    @property
    def torch_threads(self) -> int:
        """Torch threads per model worker: the setting, else the CPUs shared."""
        if self.serve.torch_threads is not None:
            return self.serve.torch_threads
        return max(1, self.cpus // self.model_workers)


def parse_deploy_config(
    data: DeployConfig | Mapping[str, Any], *, source: str = "deploy config"
) -> DeployConfig:
    """Validate ``data`` into a DeployConfig.

    Raises ConfigError naming ``source`` and every invalid field.
    """
    return validate_config(DeployConfig, data, what="deploy config", source=source)


def deploy_config_names() -> list[str]:
    """The packaged configs (``dev``, ``prod``)."""
    return packaged_names("mlkit.deploy", "configs")


def load_deploy_config(config: str | Path, **overrides: Any) -> DeployConfig:
    """A packaged config by name (``dev``, ``prod``) or a YAML file by path,
    with ``overrides`` merged over it (nested mappings merge key by key).

    The packaged configs hold neither ``image`` nor ``model_sha256``: pass them
    as overrides. Raises ConfigError for an unknown name, a missing or
    unreadable file, and every invalid field.
    """
    data, source = read_config(
        config, package="mlkit.deploy", folder="configs", what="deploy config"
    )
    return parse_deploy_config(merge_settings(data, overrides), source=source)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` as ``{"a": {"b": 1}, "c": "x"}``.

    Keys are dotted paths into the config; values are read as YAML, so
    ``3``, ``true``, ``null`` and ``[a, b]`` have their YAML types and
    ``512Mi`` stays a string. Raises ConfigError for an item without ``=``,
    an empty key part or a value that is not YAML.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"expected KEY=VALUE with a dotted KEY, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value {raw!r} is not valid YAML") from exc
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part.strip(), {})
            if not isinstance(child, dict):
                raise ConfigError(f"{item!r}: {part} was already set to a value")
            node = child
        node[parts[-1].strip()] = value
    return result
