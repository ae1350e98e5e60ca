"""The Google Cloud side: network, NAT, a private GKE cluster, its node pool,
the image registry and the service accounts.

Everything is declared with one explicit ``gcp.Provider`` built from the stack
config, so the project and region come from ``mlkit:`` keys only and an
ambient ``gcloud`` default can never redirect a deployment.

The security posture, and why:

- Nodes have no public address (private nodes); they reach the internet only
  through Cloud NAT, for image layers outside Artifact Registry and for OS
  updates.
- The control plane's public endpoint accepts only ``master_authorized_networks``
  (none by default), or is switched off entirely with ``private_endpoint``.
- Nodes run as a dedicated service account that may write logs and metrics and
  read images from this project's registry, nothing else; the default compute
  service account (project Editor) is never used.
- Pods get Google credentials only through Workload Identity: the node
  metadata server is replaced by GKE's (``GKE_METADATA``), and the app's
  Kubernetes service account may impersonate exactly one Google service
  account, which holds only ``app_roles`` (none by default: the server reads
  its model from the image and calls no Google API).
- Dataplane V2 enforces the NetworkPolicy that ``mlkit.deploy`` renders; on a
  cluster without an enforcing dataplane a NetworkPolicy is silently ignored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from .config import StackConfig

log = logging.getLogger(__name__)

POD_RANGE = "pods"
SERVICE_RANGE = "services"
APIS = (
    "compute.googleapis.com",
    "container.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
)
# What a node needs to run GKE's logging and monitoring agents; image pulls
# are granted on the registry itself, not project-wide.
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
)
WORKLOAD_IDENTITY_ROLE = "roles/iam.workloadIdentityUser"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def node_account_id(config: StackConfig) -> str:
    return f"{config.name}-nodes"


def app_account_id(config: StackConfig) -> str:
    return f"{config.name}-app"


def app_account_email(config: StackConfig) -> str:
    """The app's Google service account address, known before it exists (GCP
    derives it from the account id and the project)."""
    return f"{app_account_id(config)}@{config.project}.iam.gserviceaccount.com"


def workload_identity_member(config: StackConfig, namespace: str, ksa: str) -> str:
    """The IAM member that stands for Kubernetes service account ``ksa`` of
    ``namespace`` in this project's Workload Identity pool."""
    return f"serviceAccount:{config.workload_pool}[{namespace}/{ksa}]"


@dataclass
class Network:
    network: gcp.compute.Network
    subnet: gcp.compute.Subnetwork
    router: gcp.compute.Router
    nat: gcp.compute.RouterNat


@dataclass
class Cluster:
    cluster: gcp.container.Cluster
    node_pool: gcp.container.NodePool
    node_account: gcp.serviceaccount.Account


@dataclass
class AppIdentity:
    account: gcp.serviceaccount.Account
    binding: gcp.serviceaccount.IAMMember


@dataclass
class GcpStack:
    """Every GCP resource of a stack, for the Kubernetes part and for tests."""

    provider: gcp.Provider
    network: Network
    cluster: Cluster
    registry: gcp.artifactregistry.Repository
    app: AppIdentity


def _opts(
    provider: gcp.Provider, *depends_on: pulumi.Resource
) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(provider=provider, depends_on=list(depends_on))


def _label_value(text: str) -> str:
    # GCP label values: at most 63 lower-case letters, digits, "_" and "-".
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def enable_apis(
    config: StackConfig, provider: gcp.Provider
) -> list[gcp.projects.Service]:
    """The project APIs the stack uses. They stay enabled on destroy: other
    workloads of the project may need them."""
    return [
        gcp.projects.Service(
            f"api-{api.split('.')[0]}",
            project=config.project,
            service=api,
            disable_on_destroy=False,
            opts=_opts(provider),
        )
        for api in APIS
    ]


def create_network(
    config: StackConfig, provider: gcp.Provider, apis: list[pulumi.Resource]
) -> Network:
    """A custom-mode VPC with one subnet (pod and service ranges as secondary
    ranges, for a VPC-native cluster), a Cloud Router and Cloud NAT."""
    network = gcp.compute.Network(
        "network",
        name=f"{config.name}-vpc",
        auto_create_subnetworks=False,
        routing_mode="REGIONAL",
        opts=_opts(provider, *apis),
    )
    subnet = gcp.compute.Subnetwork(
        "subnet",
        name=f"{config.name}-nodes",
        region=config.region,
        network=network.id,
        ip_cidr_range=config.subnet_cidr,
        # Nodes without public addresses still reach Google APIs directly.
        private_ip_google_access=True,
        secondary_ip_ranges=[
            gcp.compute.SubnetworkSecondaryIpRangeArgs(
                range_name=POD_RANGE, ip_cidr_range=config.pods_cidr
            ),
            gcp.compute.SubnetworkSecondaryIpRangeArgs(
                range_name=SERVICE_RANGE, ip_cidr_range=config.services_cidr
            ),
        ],
        opts=_opts(provider),
    )
    router = gcp.compute.Router(
        "router",
        name=f"{config.name}-router",
        region=config.region,
        network=network.id,
        opts=_opts(provider),
    )
    nat = gcp.compute.RouterNat(
        "nat",
        name=f"{config.name}-nat",
        region=config.region,
        router=router.name,
        nat_ip_allocate_option="AUTO_ONLY",
        source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
        subnetworks=[
            gcp.compute.RouterNatSubnetworkArgs(
                name=subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"]
            )
        ],
        log_config=gcp.compute.RouterNatLogConfigArgs(
            enable=True, filter="ERRORS_ONLY"
        ),
        opts=_opts(provider),
    )
    return Network(network=network, subnet=subnet, router=router, nat=nat)


def create_registry(
    config: StackConfig, provider: gcp.Provider, apis: list[pulumi.Resource]
) -> gcp.artifactregistry.Repository:
    """The docker repository the gated images are pushed to. Tags are
    immutable: a tag names one gated model for good, so a rollback pulls the
    same bytes."""
    return gcp.artifactregistry.Repository(
        "registry",
        repository_id=config.registry_id,
        location=config.region,
        format="DOCKER",
        description="mlkit inference images, tagged <git sha>-<model sha[:12]>",
        docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(
            immutable_tags=True
        ),
        opts=_opts(provider, *apis),
    )


def create_cluster(
    config: StackConfig,
    provider: gcp.Provider,
    network: Network,
    registry: gcp.artifactregistry.Repository,
    apis: list[pulumi.Resource],
) -> Cluster:
    """The private, VPC-native GKE cluster and its autoscaled node pool, run
    by a dedicated least-privilege node service account."""
    node_account = gcp.serviceaccount.Account(
        "node-account",
        account_id=node_account_id(config),
        display_name=f"GKE nodes of {config.name}",
        opts=_opts(provider, *apis),
    )
    grants: list[pulumi.Resource] = [
        gcp.projects.IAMMember(
            f"node-{role.split('/')[-1].replace('.', '-').lower()}",
            project=config.project,
            role=role,
            member=node_account.member,
            opts=_opts(provider),
        )
        for role in NODE_ROLES
    ]
    grants.append(
        gcp.artifactregistry.RepositoryIamMember(
            "node-registry-reader",
            location=registry.location,
            repository=registry.name,
            role="roles/artifactregistry.reader",
            member=node_account.member,
            opts=_opts(provider),
        )
    )

    cluster = gcp.container.Cluster(
        "cluster",
        name=config.name,
        location=config.region,
        node_locations=config.zones or None,
        network=network.network.id,
        subnetwork=network.subnet.id,
        # Node pools are managed separately; GKE insists on creating a default
        # pool with the cluster, which is deleted right away.
        remove_default_node_pool=True,
        initial_node_count=1,
        networking_mode="VPC_NATIVE",
        ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
            cluster_secondary_range_name=POD_RANGE,
            services_secondary_range_name=SERVICE_RANGE,
        ),
        private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
            enable_private_nodes=True,
            enable_private_endpoint=config.private_endpoint,
            master_ipv4_cidr_block=config.master_cidr,
        ),
        master_authorized_networks_config=(
            gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[
                    gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                        cidr_block=entry.cidr, display_name=entry.name
                    )
                    for entry in config.master_authorized_networks
                ]
            )
        ),
        workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
            workload_pool=config.workload_pool
        ),
        release_channel=gcp.container.ClusterReleaseChannelArgs(
            channel=config.release_channel
        ),
        enable_shielded_nodes=True,
        datapath_provider="ADVANCED_DATAPATH",
        deletion_protection=config.deletion_protection,
        resource_labels={"app": "mlkit", "stack": _label_value(pulumi.get_stack())},
        opts=_opts(provider, *apis),
    )

    node_pool = gcp.container.NodePool(
        "nodes",
        name=f"{config.name}-serve",
        cluster=cluster.name,
        location=cluster.location,
        node_locations=config.zones or None,
        # total_* bound the whole pool, whatever the number of zones.
        autoscaling=gcp.container.NodePoolAutoscalingArgs(
            total_min_node_count=config.node_min_count,
            total_max_node_count=config.node_max_count,
            location_policy="BALANCED",
        ),
        management=gcp.container.NodePoolManagementArgs(
            auto_repair=True, auto_upgrade=True
        ),
        # Surge upgrades: a new node joins before an old one drains, so the
        # PodDisruptionBudget can always be met.
        upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(
            max_surge=1, max_unavailable=0
        ),
        node_config=gcp.container.NodePoolNodeConfigArgs(
            machine_type=config.machine_type,
            disk_size_gb=config.node_disk_size_gb,
            disk_type=config.node_disk_type,
            image_type="COS_CONTAINERD",
            spot=config.node_spot,
            service_account=node_account.email,
            # Access is governed by the account's IAM roles, not by scopes.
            oauth_scopes=[CLOUD_PLATFORM_SCOPE],
            workload_metadata_config=(
                gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"
                )
            ),
            shielded_instance_config=(
                gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                )
            ),
            metadata={"disable-legacy-endpoints": "true"},
            labels={"mlkit/pool": "serve"},
        ),
        opts=_opts(provider, *grants),
    )
    return Cluster(cluster=cluster, node_pool=node_pool, node_account=node_account)


def create_app_identity(
    config: StackConfig,
    provider: gcp.Provider,
    cluster: gcp.container.Cluster,
    namespace: str,
    ksa: str,
) -> AppIdentity:
    """The app's Google service account, with ``app_roles`` only, and the
    Workload Identity binding that lets Kubernetes service account
    ``namespace/ksa`` act as it."""
    account = gcp.serviceaccount.Account(
        "app-account",
        account_id=app_account_id(config),
        display_name=f"mlkit inference service ({config.name})",
        opts=_opts(provider),
    )
    for role in config.app_roles:
        gcp.projects.IAMMember(
            f"app-{role.split('/')[-1].replace('.', '-').lower()}",
            project=config.project,
            role=role,
            member=account.member,
            opts=_opts(provider),
        )
    # The pool <project>.svc.id.goog exists once the cluster does.
    binding = gcp.serviceaccount.IAMMember(
        "app-workload-identity",
        service_account_id=account.name,
        role=WORKLOAD_IDENTITY_ROLE,
        member=workload_identity_member(config, namespace, ksa),
        opts=_opts(provider, cluster),
    )
    return AppIdentity(account=account, binding=binding)


def create_gcp(config: StackConfig, *, namespace: str, ksa: str) -> GcpStack:
    """Every GCP resource of a ``create_cluster`` stack."""
    provider = gcp.Provider("gcp", project=config.project, region=config.region)
    apis: list[pulumi.Resource] = (
        list(enable_apis(config, provider)) if config.enable_apis else []
    )
    network = create_network(config, provider, apis)
    registry = create_registry(config, provider, apis)
    cluster = create_cluster(config, provider, network, registry, apis)
    app = create_app_identity(config, provider, cluster.cluster, namespace, ksa)
    log.info(
        "declared GKE cluster %s in %s (%s nodes %d..%d)",
        config.name,
        config.region,
        config.machine_type,
        config.node_min_count,
        config.node_max_count,
    )
    return GcpStack(
        provider=provider, network=network, cluster=cluster, registry=registry, app=app
    )
