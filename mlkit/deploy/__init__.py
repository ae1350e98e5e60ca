"""Deployment of the inference service to Kubernetes.

``config`` describes a deployment (``DeployConfig``, packaged ``dev`` and
``prod`` defaults), ``objects`` builds its Kubernetes objects from it (the one
copy of the spec, used by ``mlkit deploy render`` and the Pulumi program), and
``gate`` makes sure only a model that passed the evaluation gate is deployed,
under an image tag that names it. ``cluster`` applies the objects to a cluster
and watches the rollout and the autoscaler; ``autoscale`` simulates the
HorizontalPodAutoscaler for capacity planning and where no cluster is reachable.
``validate`` checks the objects against the upstream schemas, ``release`` ties a
gated model to its image and objects (the deploy notebook), and ``scaling``
measures a server's capacity and plots the autoscaling story (the scaling
notebook).

Importing this package loads neither torch nor the Kubernetes client.
"""

from mlkit.deploy.autoscale import (
    HPASpec,
    PodModel,
    SimulationConfig,
    SimulationResult,
    calibrate_pod,
    hpa_spec_from_object,
    simulate,
)
from mlkit.deploy.cluster import (
    AppliedObject,
    Cluster,
    ClusterError,
    ClusterUnreachable,
    RolloutFailed,
    RolloutStatus,
    connect,
)
from mlkit.deploy.config import (
    DeployConfig,
    HpaBehavior,
    ImageConfig,
    NetworkPolicySettings,
    Peer,
    ResourceAmounts,
    Resources,
    ScalingPolicy,
    ScalingRules,
    ServeSettings,
    ServiceAccountSettings,
    deploy_config_names,
    load_deploy_config,
    merge_settings,
    parse_deploy_config,
    parse_image_reference,
    parse_overrides,
    parse_quantity,
)
from mlkit.deploy.gate import (
    check_gated_model,
    gated_image_tag,
    git_head,
    image_reference,
)
from mlkit.deploy.objects import (
    build_objects,
    check_serve_environment,
    common_labels,
    config_checksum,
    label_selector,
    object_file_name,
    render_yaml,
    selector_labels,
    serve_environment,
    write_objects,
)

__all__ = [
    "AppliedObject",
    "Cluster",
    "ClusterError",
    "ClusterUnreachable",
    "HPASpec",
    "PodModel",
    "RolloutFailed",
    "RolloutStatus",
    "SimulationConfig",
    "SimulationResult",
    "calibrate_pod",
    "connect",
    "hpa_spec_from_object",
    "simulate",
    "DeployConfig",
    "HpaBehavior",
    "ImageConfig",
    "NetworkPolicySettings",
    "Peer",
    "ResourceAmounts",
    "Resources",
    "ScalingPolicy",
    "ScalingRules",
    "ServeSettings",
    "ServiceAccountSettings",
    "build_objects",
    "check_gated_model",
    "check_serve_environment",
    "common_labels",
    "config_checksum",
    "deploy_config_names",
    "gated_image_tag",
    "git_head",
    "image_reference",
    "label_selector",
    "load_deploy_config",
    "merge_settings",
    "object_file_name",
    "parse_deploy_config",
    "parse_image_reference",
    "parse_overrides",
    "parse_quantity",
    "render_yaml",
    "selector_labels",
    "serve_environment",
    "write_objects",
]
