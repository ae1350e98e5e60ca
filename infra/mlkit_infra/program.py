"""The Pulumi program: the stack config in, the cluster and the service out.

``main()`` is what ``infra/__main__.py`` runs; ``run()`` declares the same
resources and returns them with the stack outputs instead of exporting, which
is what the tests and ``infra/mock_preview.py`` call under Pulumi's mocks.

Two modes, chosen by ``mlkit:create_cluster``:

- true (default): the network, a private GKE cluster, its node pool, the
  registry and the app's Google service account (``mlkit_infra.gcp``), then a
  Kubernetes provider for the new cluster.
- false: no Google Cloud resource at all; the provider targets an existing
  cluster through ``mlkit:kubeconfig`` (a secret) or ``mlkit:kubeconfig_context``.

Either way the Kubernetes objects are ``mlkit.deploy.build_objects`` of a
DeployConfig: the packaged or file config ``mlkit:deploy_config``, with the
stack's image, model sha, replica bounds and CPU target on top.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from mlkit.deploy import (
    DeployConfig,
    build_objects,
    image_reference,
    load_deploy_config,
)
from mlkit.errors import ConfigError

from .config import NAMESPACE, StackConfig, parse_stack_config
from .gcp import GcpStack, app_account_email, create_gcp
from .k8s import (
    AppliedObjects,
    apply_objects,
    existing_cluster_provider,
    gke_provider,
    service_url,
)

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parents[1]
KUBECONFIG_KEY = f"{NAMESPACE}:kubeconfig"


@dataclass
class StackResult:
    """What one run of the program declared, and the stack outputs."""

    config: StackConfig
    deploy: DeployConfig
    objects: AppliedObjects
    gcp: GcpStack | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def _config_values(namespace: str) -> dict[str, str]:
    """Every ``<namespace>:<key>`` the engine passed, as ``{key: value}``.

    The engine hands config to the program as a JSON environment variable or,
    under test mocks, through ``set_all_config``; both are read, so that a key
    that names no setting is reported instead of ignored.
    """
    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{namespace}:"
    return {
        key[len(prefix) :]: value
        for key, value in merged.items()
        if key.startswith(prefix) and key != KUBECONFIG_KEY
    }


def read_stack_config() -> StackConfig:
    """The validated ``mlkit:`` config of the running stack.

    ``project`` and ``region`` fall back to ``gcp:project`` and ``gcp:region``
    when the stack sets those instead. Raises ConfigError naming every bad key.
    """
    stack = pulumi.get_stack()
    values: dict[str, Any] = _config_values(NAMESPACE)
    gcp_config = pulumi.Config("gcp")
    for key in ("project", "region"):
        fallback = gcp_config.get(key)
        if key not in values and fallback is not None:
            values[key] = fallback
    return parse_stack_config(values, stack=stack, source=f"stack {stack}")


def _kubeconfig(config: StackConfig) -> pulumi.Output[str] | None:
    """The ``mlkit:kubeconfig`` secret, checked against the mode; ConfigError
    when it is in plain text, set for a cluster this stack creates, or missing
    (with no context either) for an existing cluster."""
    raw = pulumi.Config(NAMESPACE).get("kubeconfig")
    if raw is None:
        if not config.create_cluster and config.kubeconfig_context is None:
            raise ConfigError(
                f"stack {pulumi.get_stack()}: create_cluster is false, so the "
                "stack needs a cluster to deploy to: set the secret "
                "mlkit:kubeconfig (pulumi config set --secret kubeconfig "
                '"$(cat kubeconfig.yaml)") or mlkit:kubeconfig_context'
            )
        return None
    secret = (
        runtime_config.is_config_secret(KUBECONFIG_KEY)
        or KUBECONFIG_KEY in runtime_config.get_config_secret_keys_env()
    )
    if not secret:
        raise ConfigError(
            f"stack {pulumi.get_stack()}: mlkit:kubeconfig is stored in plain "
            "text; it holds cluster credentials: remove it from the stack file "
            "and set it with pulumi config set --secret kubeconfig ..."
        )
    if config.create_cluster:
        raise ConfigError(
            f"stack {pulumi.get_stack()}: mlkit:kubeconfig is set but "
            "create_cluster is true; the stack reaches the cluster it creates "
            "by itself. Set create_cluster to false to deploy to the kubeconfig's "
            "cluster instead"
        )
    return pulumi.Config(NAMESPACE).get_secret("kubeconfig")


def _deploy_config_source(name: str) -> str | Path:
    # A relative file is relative to infra/ (where Pulumi.yaml is), whatever
    # directory the program or the preview script was started from.
    if Path(name).suffix in {".yaml", ".yml"} and not Path(name).is_absolute():
        return INFRA_DIR / name
    return name


def deploy_config_for(config: StackConfig, *, gsa_email: str | None) -> DeployConfig:
    """The DeployConfig of a stack: ``deploy_config`` with ``deploy_overrides``,
    then the stack's own keys, on top.

    Raises ConfigError naming the stack when the result is invalid (a replica
    bound that contradicts the deploy config, an image tag without the model
    sha, ...).
    """
    if config.image_tag is not None:
        image = f"{config.image_repo}:{config.image_tag}"
    else:
        # StackConfig requires git_sha when there is no image_tag.
        image = image_reference(
            config.image_repo, str(config.git_sha), config.model_sha
        )
    overrides: dict[str, Any] = {
        **config.deploy_overrides,
        "image": image,
        "model_sha256": config.model_sha,
    }
    for key, value in (
        ("min_replicas", config.hpa_min_replicas),
        ("max_replicas", config.hpa_max_replicas),
        ("target_cpu_utilization", config.hpa_cpu_target),
    ):
        if value is not None:
            overrides[key] = value
    if gsa_email is not None:
        account = dict(overrides.get("service_account") or {})
        account["gcp_service_account"] = gsa_email
        overrides["service_account"] = account
    try:
        return load_deploy_config(
            _deploy_config_source(config.deploy_config), **overrides
        )
    except ConfigError as exc:
        raise ConfigError(
            f"stack {pulumi.get_stack()}: mlkit:deploy_config "
            f"{config.deploy_config!r} with the stack's image, model_sha and hpa_* "
            f"keys is not a valid deployment: {exc}"
        ) from exc


def run(config: StackConfig | None = None) -> StackResult:
    """Declare every resource of the stack; return them and the outputs.

    ``config`` defaults to the running stack's (``read_stack_config``). All
    checks happen before the first resource is declared.
    """
    config = config if config is not None else read_stack_config()
    kubeconfig = _kubeconfig(config)
    gsa_email = app_account_email(config) if config.create_cluster else None
    deploy = deploy_config_for(config, gsa_email=gsa_email)
    objects = build_objects(deploy)

    gcp_stack: GcpStack | None = None
    if config.create_cluster:
        gcp_stack = create_gcp(
            config, namespace=deploy.namespace, ksa=deploy.service_account_name
        )
        provider = gke_provider(gcp_stack.cluster.cluster)
        applied = apply_objects(
            objects,
            provider,
            gsa_email=gcp_stack.app.account.email,
            depends_on=[gcp_stack.cluster.node_pool, gcp_stack.app.binding],
        )
        cluster_name: Any = gcp_stack.cluster.cluster.name
    else:
        provider = existing_cluster_provider(kubeconfig, config.kubeconfig_context)
        applied = apply_objects(objects, provider)
        cluster_name = (
            config.kubeconfig_context or "(current context of mlkit:kubeconfig)"
        )

    outputs: dict[str, Any] = {
        "service_url": service_url(
            applied.get("Service"),
            name=deploy.name,
            namespace=deploy.namespace,
            port=deploy.service_port,
        ),
        "cluster_name": cluster_name,
        "image": deploy.image.reference,
        "model_sha": deploy.model_sha256,
        "namespace": deploy.namespace,
    }
    if gcp_stack is not None:
        outputs["registry"] = config.registry_url
        outputs["app_service_account"] = gcp_stack.app.account.email
    return StackResult(
        config=config, deploy=deploy, objects=applied, gcp=gcp_stack, outputs=outputs
    )


def main() -> StackResult:
    """Run the program and export its outputs (what ``pulumi up`` runs)."""
    result = run()
    for key, value in result.outputs.items():
        pulumi.export(key, value)
    return result
