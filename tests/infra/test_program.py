"""The Pulumi program of infra/, run under pulumi.runtime mocks.

No Pulumi CLI, engine, cloud or cluster: ``mlkit_infra.mocks.run_stack`` runs
the program with ``set_mocks`` and records every resource it declares, with
the inputs the engine would have received. The stack files are the real
``infra/Pulumi.<stack>.yaml``, fed as the engine would feed them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml
from mlkit_infra import gcp as infra_gcp
from mlkit_infra import k8s as infra_k8s
from mlkit_infra.config import StackConfig, parse_stack_config
from mlkit_infra.mocks import (
    MOCK_ENDPOINT,
    MOCK_LOAD_BALANCER_IP,
    PLACEHOLDER_MODEL_SHA,
    RecordingMocks,
    key_inputs,
    preview_report,
    run_stack,
    stack_file_config,
)
from mlkit_infra.program import deploy_config_for, main, run
from pulumi.runtime import rpc

from mlkit.deploy import build_objects
from mlkit.errors import ConfigError

pytestmark = [
    # Importing pulumi_gcp.compute (on first use, inside a test) warns about two
    # classes pulumi-gcp itself deprecated (MangedSslCertificate, RouterStatus);
    # the program uses neither.
    pytest.mark.filterwarnings(
        r"ignore:gcp\.compute\.\w+ has been deprecated:DeprecationWarning"
    ),
]

INFRA_DIR = Path(__file__).resolve().parents[2] / "infra"
MODEL_SHA = "ab" * 32
GIT_SHA = "1234abc"
RELEASE = {"mlkit:model_sha": MODEL_SHA, "mlkit:git_sha": GIT_SHA}

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
NETWORK = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
ACCOUNT = "gcp:serviceaccount/account:Account"
SA_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
REPO = "gcp:artifactregistry/repository:Repository"
REPO_MEMBER = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
K8S_PROVIDER = "pulumi:providers:kubernetes"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE = "kubernetes:core/v1:Service"
KSA = "kubernetes:core/v1:ServiceAccount"
K8S_KINDS = {
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    DEPLOYMENT,
    HPA,
    SERVICE,
    KSA,
}


def stack_config(stack: str, **extra: str) -> dict[str, str]:
    """The stack file's config plus a release (git and model sha) and ``extra``
    (keys without the ``mlkit:`` prefix)."""
    values = {**stack_file_config(stack), **RELEASE}
    values.update({f"mlkit:{key}": value for key, value in extra.items()})
    return values


def minimal_config(**extra: str) -> dict[str, str]:
    values = {"mlkit:project": "mlkit-test", **RELEASE}
    values.update({f"mlkit:{key}": value for key, value in extra.items()})
    return values


@pytest.fixture(scope="module")
def dev():
    return run_stack(stack_config("dev"), stack="dev")


@pytest.fixture(scope="module")
def prod():
    return run_stack(stack_config("prod"), stack="prod")


@pytest.fixture(scope="module")
def stack_files():
    return {
        stack: yaml.safe_load((INFRA_DIR / f"Pulumi.{stack}.yaml").read_text())[
            "config"
        ]
        for stack in ("dev", "prod")
    }


def _private(cidr: str) -> bool:
    return ipaddress.ip_network(cidr).is_private and any(
        ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(block))
        for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    )


# --- what a create_cluster stack declares ------------------------------------


def test_dev_declares_the_network_cluster_registry_identity_and_objects(dev):
    types = {d.type for d in dev.declared}
    for typ in (NETWORK, SUBNET, ROUTER, NAT, CLUSTER, NODE_POOL, REPO, SA_MEMBER):
        assert len(dev.of_type(typ)) == 1, typ
    assert len(dev.of_type(ACCOUNT)) == 2  # nodes and app
    assert types >= K8S_KINDS
    # One object per kind that mlkit.deploy renders, nothing more.
    assert len([d for d in dev.declared if d.type.startswith("kubernetes:")]) == len(
        build_objects(dev.result.deploy)
    )
    # Every Kubernetes object goes through the provider built for the cluster.
    provider = dev.one(K8S_PROVIDER)
    assert provider.name == "gke"


def test_network_is_custom_mode_with_pod_and_service_ranges(dev):
    assert dev.one(NETWORK).inputs["autoCreateSubnetworks"] is False
    subnet = dev.one(SUBNET).inputs
    # The dev stack file sets no ranges: the defaults apply.
    assert subnet["ipCidrRange"] == StackConfig.model_fields["subnet_cidr"].default
    ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnet["secondaryIpRanges"]}
    assert ranges == {
        infra_gcp.POD_RANGE: StackConfig.model_fields["pods_cidr"].default,
        infra_gcp.SERVICE_RANGE: StackConfig.model_fields["services_cidr"].default,
    }
    assert subnet["privateIpGoogleAccess"] is True


def test_cloud_nat_serves_the_subnet(dev):
    nat = dev.one(NAT).inputs
    assert nat["router"] == dev.one(ROUTER).inputs["name"]
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert nat["subnetworks"][0]["sourceIpRangesToNats"] == ["ALL_IP_RANGES"]
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert dev.one(ROUTER).inputs["region"] == "europe-west1"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cluster_is_private_vpc_native_with_workload_identity(stack, dev, prod):
    outcome = {"dev": dev, "prod": prod}[stack]
    cluster = outcome.one(CLUSTER).inputs
    private = cluster["privateClusterConfig"]
    assert private["enablePrivateNodes"] is True
    master = private["masterIpv4CidrBlock"]
    assert _private(master)
    assert ipaddress.ip_network(master).prefixlen == 28
    project = outcome.result.config.project
    assert cluster["workloadIdentityConfig"] == {
        "workloadPool": f"{project}.svc.id.goog"
    }
    assert cluster["networkingMode"] == "VPC_NATIVE"
    assert cluster["ipAllocationPolicy"] == {
        "clusterSecondaryRangeName": "pods",
        "servicesSecondaryRangeName": "services",
    }
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["enableShieldedNodes"] is True
    # Dataplane V2: the rendered NetworkPolicy is enforced.
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"
    assert cluster["masterAuthorizedNetworksConfig"]["cidrBlocks"] == []


def test_cluster_private_config_as_the_sdk_sees_it():
    # The same check through the resource's outputs, the pulumi.runtime.test way.
    pulumi.runtime.set_mocks(
        RecordingMocks(), project="mlkit", stack="dev", preview=False
    )
    pulumi.runtime.set_all_config(minimal_config(master_cidr="192.168.100.0/28"))

    @pulumi.runtime.test
    def check():
        result = run()
        cluster = result.gcp.cluster.cluster

        def private(config):
            assert config["enable_private_nodes"] is True
            assert config["master_ipv4_cidr_block"] == "192.168.100.0/28"

        def identity(config):
            assert config["workload_pool"] == "mlkit-test.svc.id.goog"

        return pulumi.Output.all(
            cluster.private_cluster_config.apply(private),
            cluster.workload_identity_config.apply(identity),
        )

    try:
        check()
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_node_pool_autoscales_within_the_stack_bounds(dev, prod, stack_files):
    for outcome, stack in ((dev, "dev"), (prod, "prod")):
        pool = outcome.one(NODE_POOL).inputs
        autoscaling = pool["autoscaling"]
        assert (
            autoscaling["totalMinNodeCount"]
            == stack_files[stack]["mlkit:node_min_count"]
        )
        assert (
            autoscaling["totalMaxNodeCount"]
            == stack_files[stack]["mlkit:node_max_count"]
        )
        node = pool["nodeConfig"]
        assert node["machineType"] == stack_files[stack]["mlkit:machine_type"]
        assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
        assert node["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
        assert node["metadata"]["disable-legacy-endpoints"] == "true"
        assert pool["cluster"] == outcome.one(CLUSTER).inputs["name"]


def test_nodes_run_as_a_dedicated_account_with_few_roles(dev):
    accounts = {d.name: d.inputs for d in dev.of_type(ACCOUNT)}
    node_email = (
        f"{accounts['node-account']['accountId']}@mlkit-dev.iam.gserviceaccount.com"
    )
    assert dev.one(NODE_POOL).inputs["nodeConfig"]["serviceAccount"] == node_email

    node_member = f"serviceAccount:{node_email}"
    project_roles = {
        d.inputs["role"]
        for d in dev.of_type(PROJECT_MEMBER)
        if d.inputs["member"] == node_member
    }
    assert project_roles == set(infra_gcp.NODE_ROLES)
    assert all(
        role.split("/")[1].split(".")[0] in {"logging", "monitoring"}
        for role in project_roles
    )
    # Image pulls: read access to this registry only, not project-wide.
    reader = dev.one(REPO_MEMBER).inputs
    assert reader["role"] == "roles/artifactregistry.reader"
    assert reader["member"] == node_member
    assert reader["repository"] == dev.one(REPO).inputs["repositoryId"]


def test_app_identity_is_bound_through_workload_identity(dev):
    deploy = dev.result.deploy
    binding = dev.one(SA_MEMBER).inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"] == (
        f"serviceAccount:mlkit-dev.svc.id.goog[{deploy.namespace}/"
        f"{deploy.service_account_name}]"
    )
    assert (
        binding["member"]
        == "serviceAccount:mlkit-dev.svc.id.goog[mlkit-dev/mlkit-serve]"
    )
    app_email = "mlkit-dev-app@mlkit-dev.iam.gserviceaccount.com"
    assert (
        binding["serviceAccountId"] == f"projects/mlkit-dev/serviceAccounts/{app_email}"
    )
    # The app account holds no project role by default.
    app_roles = [
        d
        for d in dev.of_type(PROJECT_MEMBER)
        if d.inputs["member"] == f"serviceAccount:{app_email}"
    ]
    assert app_roles == []
    annotations = dev.one(KSA).inputs["metadata"]["annotations"]
    assert annotations[infra_k8s.GSA_ANNOTATION] == app_email
    assert dev.outputs["app_service_account"] == app_email


def test_app_roles_from_config_are_granted_to_the_app_account():
    outcome = run_stack(
        minimal_config(app_roles=json.dumps(["roles/storage.objectViewer"])), stack="t"
    )
    grants = [
        d.inputs
        for d in outcome.of_type(PROJECT_MEMBER)
        if d.inputs["member"].startswith("serviceAccount:mlkit-t-app@")
    ]
    assert [g["role"] for g in grants] == ["roles/storage.objectViewer"]


def test_registry_is_docker_with_immutable_tags(dev):
    repo = dev.one(REPO).inputs
    assert repo["format"] == "DOCKER"
    assert repo["dockerConfig"] == {"immutableTags": True}
    assert dev.outputs["image"].startswith(
        f"europe-west1-docker.pkg.dev/mlkit-dev/{repo['repositoryId']}/serve:"
    )


# --- the Kubernetes objects ---------------------------------------------------


def _normalized(value):
    # The engine carries numbers as floats.
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_objects_are_exactly_what_mlkit_deploy_renders(stack, dev, prod):
    outcome = {"dev": dev, "prod": prod}[stack]
    rendered = build_objects(
        deploy_config_for(
            outcome.result.config,
            gsa_email=(infra_gcp.app_account_email(outcome.result.config)),
        )
    )
    declared = {
        (d.inputs["kind"], d.inputs["metadata"]["name"]): d.inputs
        for d in outcome.declared
        if d.type.startswith("kubernetes:")
    }
    assert len(declared) == len(rendered)
    for obj in rendered:
        assert declared[(obj["kind"], obj["metadata"]["name"])] == _normalized(obj)


def test_hpa_targets_the_deployment_with_the_configured_bounds(dev, prod):
    for outcome, bounds in ((dev, (1, 3)), (prod, (2, 10))):
        hpa = outcome.one(HPA).inputs["spec"]
        deployment = outcome.one(DEPLOYMENT).inputs
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert (
            outcome.one(HPA).inputs["metadata"]["namespace"]
            == (deployment["metadata"]["namespace"])
        )
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == bounds
        # The HPA owns the replica count.
        assert "replicas" not in deployment["spec"]


def test_stack_keys_override_the_deploy_config_hpa():
    outcome = run_stack(
        minimal_config(hpa_min_replicas="2", hpa_max_replicas="7", hpa_cpu_target="45"),
        stack="t",
    )
    hpa = outcome.one(HPA).inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 45


def test_deployment_has_probes_and_a_locked_down_pod(dev):
    spec = dev.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert container["image"] == (
        f"europe-west1-docker.pkg.dev/mlkit-dev/mlkit/serve:{GIT_SHA}-{MODEL_SHA[:12]}"
    )


def test_outputs_name_the_service_cluster_image_and_model(dev):
    assert (
        dev.outputs["service_url"] == "http://mlkit-serve.mlkit-dev.svc.cluster.local"
    )
    assert dev.outputs["cluster_name"] == "mlkit-dev"
    assert dev.outputs["model_sha"] == MODEL_SHA
    assert dev.outputs["image"].endswith(f":{GIT_SHA}-{MODEL_SHA[:12]}")
    assert dev.outputs["namespace"] == "mlkit-dev"


def test_service_url_is_the_load_balancer_address_when_there_is_one():
    overrides = {
        "service_type": "LoadBalancer",
        "network_policy": {"allow_cidrs": ["0.0.0.0/0"]},
        "service_port": 8000,
    }
    outcome = run_stack(
        minimal_config(deploy_overrides=json.dumps(overrides)), stack="t"
    )
    assert outcome.one(SERVICE).inputs["spec"]["type"] == "LoadBalancer"
    assert outcome.outputs["service_url"] == f"http://{MOCK_LOAD_BALANCER_IP}:8000"


def test_kubernetes_provider_uses_the_cluster_and_the_auth_plugin(dev):
    provider = dev.one(K8S_PROVIDER).inputs
    kubeconfig = yaml.safe_load(provider["kubeconfig"])
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == f"https://{MOCK_ENDPOINT}"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    # No static credentials of any kind.
    assert set(user["user"]) == {"exec"}
    assert provider["clusterIdentifier"] == "cluster-id"


def test_main_exports_the_outputs():
    pulumi.runtime.set_mocks(
        RecordingMocks(), project="mlkit", stack="dev", preview=False
    )
    pulumi.runtime.set_all_config(minimal_config())

    @pulumi.runtime.test
    def check():
        result = main()
        return result.outputs["service_url"].apply(
            lambda url: assert_equal(
                url, "http://mlkit-serve.mlkit-dev.svc.cluster.local"
            )
        )

    try:
        check()
    finally:
        pulumi.runtime.set_all_config({}, [])


def test_entry_point_runs_the_program():
    # infra/__main__.py, as Pulumi runs it.
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlkit", stack="t", preview=False)
    pulumi.runtime.set_all_config(minimal_config())

    @pulumi.runtime.test
    def check():
        runpy.run_path(str(INFRA_DIR / "__main__.py"), run_name="__main__")

    try:
        check()
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert {d.type for d in mocks.declared} >= {CLUSTER, DEPLOYMENT}


def assert_equal(got, expected):
    assert got == expected


# --- defaults and stacks ------------------------------------------------------


def test_defaults_apply_when_the_stack_file_is_silent():
    outcome = run_stack(minimal_config(), stack="t")
    defaults = {name: field.default for name, field in StackConfig.model_fields.items()}
    pool = outcome.one(NODE_POOL).inputs
    assert pool["autoscaling"]["totalMinNodeCount"] == defaults["node_min_count"] == 1
    assert pool["autoscaling"]["totalMaxNodeCount"] == defaults["node_max_count"] == 3
    assert pool["nodeConfig"]["machineType"] == defaults["machine_type"]
    assert pool["nodeConfig"]["diskSizeGb"] == defaults["node_disk_size_gb"]
    assert pool["nodeConfig"]["spot"] is False
    assert "nodeLocations" not in pool  # no zones: GKE picks the region's
    cluster = outcome.one(CLUSTER).inputs
    assert cluster["name"] == "mlkit-t"  # mlkit-<stack>
    assert cluster["location"] == defaults["region"] == "europe-west1"
    assert cluster["releaseChannel"] == {"channel": defaults["release_channel"]}
    assert cluster["privateClusterConfig"]["masterIpv4CidrBlock"] == "172.16.0.16/28"
    assert cluster["privateClusterConfig"]["enablePrivateEndpoint"] is False
    assert cluster["deletionProtection"] is False
    # The packaged "dev" deploy config is the default.
    assert outcome.result.deploy.namespace == "mlkit-dev"
    assert len(outcome.of_type("gcp:projects/service:Service")) == len(infra_gcp.APIS)


def test_project_and_region_fall_back_to_the_gcp_namespace():
    values = {**RELEASE, "gcp:project": "other-project", "gcp:region": "us-central1"}
    outcome = run_stack(values, stack="t")
    provider = outcome.one("pulumi:providers:gcp").inputs
    assert (provider["project"], provider["region"]) == ("other-project", "us-central1")


def test_prod_differs_from_dev_where_the_stack_files_say(dev, prod, stack_files):
    dev_cluster, prod_cluster = dev.one(CLUSTER).inputs, prod.one(CLUSTER).inputs
    assert dev_cluster["releaseChannel"]["channel"] == "REGULAR"
    assert prod_cluster["releaseChannel"]["channel"] == "STABLE"
    assert (dev_cluster["deletionProtection"], prod_cluster["deletionProtection"]) == (
        False,
        True,
    )
    assert len(prod_cluster["nodeLocations"]) > len(dev_cluster["nodeLocations"])
    dev_pool, prod_pool = dev.one(NODE_POOL).inputs, prod.one(NODE_POOL).inputs
    assert (
        prod_pool["autoscaling"]["totalMaxNodeCount"]
        > dev_pool["autoscaling"]["totalMaxNodeCount"]
    )
    assert (
        prod_pool["nodeConfig"]["machineType"] != dev_pool["nodeConfig"]["machineType"]
    )
    assert (dev_pool["nodeConfig"]["spot"], prod_pool["nodeConfig"]["spot"]) == (
        True,
        False,
    )
    assert (
        prod.one(HPA).inputs["spec"]["minReplicas"]
        > dev.one(HPA).inputs["spec"]["minReplicas"]
    )
    # Everything the prod file sets that dev does not is honoured.
    assert (
        prod.one(SUBNET).inputs["ipCidrRange"]
        == stack_files["prod"]["mlkit:subnet_cidr"]
    )
    assert (
        dev.one(SUBNET).inputs["ipCidrRange"] != prod.one(SUBNET).inputs["ipCidrRange"]
    )


def test_stack_files_hold_only_known_keys_and_no_plain_secrets(stack_files):
    for stack, config in stack_files.items():
        keys = {key.split(":", 1)[1] for key in config if key.startswith("mlkit:")}
        assert keys <= set(StackConfig.model_fields), stack
        assert "mlkit:kubeconfig" not in config or set(config["mlkit:kubeconfig"]) == {
            "secure"
        }
        assert "mlkit:model_sha" not in config  # set by CI for each release


# --- an existing cluster -------------------------------------------------------

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n"


def existing_cluster(**extra: str) -> dict[str, str]:
    values = {
        "mlkit:create_cluster": "false",
        "mlkit:image_repository": "registry.example.com/mlkit/serve",
        "mlkit:kubeconfig": KUBECONFIG,
        **RELEASE,
    }
    values.update({f"mlkit:{key}": value for key, value in extra.items()})
    return values


def test_kubeconfig_mode_creates_no_google_cloud_resource():
    outcome = run_stack(existing_cluster(), stack="t", secret_keys=["mlkit:kubeconfig"])
    assert [d.type for d in outcome.declared if d.type.startswith("gcp:")] == []
    assert "pulumi:providers:gcp" not in {d.type for d in outcome.declared}
    provider = outcome.one(K8S_PROVIDER)
    assert provider.name == "cluster"
    # It reaches the provider as a secret (Pulumi's wrapper), so the state
    # stores it encrypted.
    kubeconfig = provider.inputs["kubeconfig"]
    assert kubeconfig["value"] == KUBECONFIG
    assert kubeconfig[rpc._special_sig_key] == rpc._special_secret_sig
    assert {d.type for d in outcome.declared} >= K8S_KINDS
    # No Google service account to bind to.
    assert "annotations" not in outcome.one(KSA).inputs["metadata"]
    assert outcome.outputs["image"] == (
        f"registry.example.com/mlkit/serve:{GIT_SHA}-{MODEL_SHA[:12]}"
    )
    assert outcome.result.gcp is None


def test_kubeconfig_context_alone_targets_the_ambient_kubeconfig():
    values = existing_cluster(kubeconfig_context="kind-mlkit")
    del values["mlkit:kubeconfig"]
    outcome = run_stack(values, stack="t")
    assert outcome.one(K8S_PROVIDER).inputs["context"] == "kind-mlkit"
    assert outcome.outputs["cluster_name"] == "kind-mlkit"


def test_plain_text_kubeconfig_is_refused():
    with pytest.raises(ConfigError, match="plain text.*--secret"):
        run_stack(existing_cluster(), stack="t")


def test_existing_cluster_mode_needs_a_kubeconfig_or_context():
    values = existing_cluster()
    del values["mlkit:kubeconfig"]
    with pytest.raises(ConfigError, match="mlkit:kubeconfig.*kubeconfig_context"):
        run_stack(values, stack="t")


def test_kubeconfig_with_create_cluster_is_refused():
    values = {**minimal_config(), "mlkit:kubeconfig": KUBECONFIG}
    with pytest.raises(ConfigError, match="create_cluster is true"):
        run_stack(values, stack="t", secret_keys=["mlkit:kubeconfig"])


# --- bad config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"node_min_count": "4", "node_max_count": "2"},
            r"node_min_count \(4\).*node_max_count \(2\)",
        ),
        ({"master_cidr": "8.8.8.0/28"}, r"master_cidr.*not private.*RFC 1918"),
        ({"master_cidr": "172.16.0.0/24"}, r"master_cidr.*/28"),
        ({"master_cidr": "172.16.0.16/33"}, r"master_cidr.*not a CIDR"),
        ({"pods_cidr": "10.8.0.0/14"}, r"subnet_cidr .* overlaps pods_cidr"),
        ({"zones": '["us-east1-b"]'}, r"zone 'us-east1-b' is not a zone of region"),
        ({"zones": "europe-west1-b"}, r"mlkit:zones must be a list"),
        ({"release_channel": "FAST"}, r"release_channel"),
        ({"node_max_cont": "3"}, r"node_max_cont: unknown key"),
        ({"hpa_min_replicas": "5", "hpa_max_replicas": "2"}, r"hpa_min_replicas \(5\)"),
        ({"hpa_min_replicas": "9"}, r"deploy_config 'dev'.*min_replicas 9 is above"),
        ({"master_authorized_networks": '[{"cidr": "10.0.0.1/8"}]'}, r"cidr"),
        ({"master_authorized_networks": '[{"cidr": "2001:db8::/32"}]'}, r"IPv4"),
        ({"app_roles": '["owner"]'}, r"'owner' is not an IAM role"),
        ({"name": "Mlkit_Dev"}, r"name"),
        ({"deploy_config": "staging"}, r"unknown deploy config 'staging'"),
        ({"deploy_config": "missing.yaml"}, r"deploy config file not found"),
    ],
)
def test_bad_config_stops_before_any_resource_naming_the_key(extra, message):
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlkit", stack="t", preview=False)
    pulumi.runtime.set_all_config(minimal_config(**extra))

    @pulumi.runtime.test
    def attempt():
        with pytest.raises(ConfigError, match=message):
            run()

    try:
        attempt()
    finally:
        pulumi.runtime.set_all_config({}, [])
    # The test runner waited for every registration: there was none.
    assert mocks.declared == []


def test_missing_model_sha_is_an_error_naming_the_key():
    values = minimal_config()
    del values["mlkit:model_sha"]
    with pytest.raises(ConfigError, match="model_sha: Field required"):
        run_stack(values, stack="t")


def test_missing_git_sha_is_an_error_unless_a_tag_is_given():
    values = minimal_config()
    del values["mlkit:git_sha"]
    with pytest.raises(ConfigError, match="git_sha .* is required unless image_tag"):
        run_stack(values, stack="t")
    outcome = run_stack(
        {**values, "mlkit:image_tag": f"v1-{MODEL_SHA[:12]}"}, stack="t"
    )
    assert outcome.outputs["image"].endswith(f":v1-{MODEL_SHA[:12]}")


def test_a_tag_without_the_model_sha_is_refused():
    with pytest.raises(ConfigError, match="does not carry the model sha"):
        run_stack(minimal_config(image_tag="v1"), stack="t")


def test_missing_project_is_an_error_for_a_new_cluster():
    with pytest.raises(ConfigError, match="project is required"):
        run_stack(dict(RELEASE), stack="t")


def test_existing_cluster_needs_an_image_repository():
    values = existing_cluster()
    del values["mlkit:image_repository"]
    with pytest.raises(ConfigError, match="image_repository is required"):
        run_stack(values, stack="t", secret_keys=["mlkit:kubeconfig"])


def test_parse_stack_config_reads_engine_strings():
    config = parse_stack_config(
        {
            "project": "mlkit-x1",
            "node_min_count": "2",
            "node_spot": "true",
            "zones": '["europe-west1-c"]',
            "model_sha": MODEL_SHA,
            "git_sha": GIT_SHA,
            "kubeconfig": "never read here",
        },
        stack="x",
    )
    assert (config.node_min_count, config.node_spot, config.zones) == (
        2,
        True,
        ["europe-west1-c"],
    )
    assert config.name == "mlkit-x"
    assert config.image_repo == "europe-west1-docker.pkg.dev/mlkit-x1/mlkit/serve"


def test_deploy_config_file_is_relative_to_infra(tmp_path, monkeypatch):
    import mlkit_infra.program

    # A deploy config given as a file, outside the packaged names, found next
    # to Pulumi.yaml whatever the working directory.
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "custom.yaml").write_text("namespace: from-file\nmax_replicas: 2\n")
    monkeypatch.setattr(mlkit_infra.program, "INFRA_DIR", infra)
    monkeypatch.chdir(tmp_path)
    outcome = run_stack(minimal_config(deploy_config="custom.yaml"), stack="t")
    assert outcome.result.deploy.namespace == "from-file"
    assert outcome.one(HPA).inputs["spec"]["maxReplicas"] == 2


# --- the object mapping --------------------------------------------------------


def test_unknown_kind_and_duplicates_are_refused():
    pulumi.runtime.set_mocks(
        RecordingMocks(), project="mlkit", stack="t", preview=False
    )
    provider = None  # never reached: the checks come first

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}
    with pytest.raises(ConfigError, match="'Job'.*supported: .*apps/v1/Deployment"):
        infra_k8s.apply_objects([job], provider)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "n"},
        "data": {},
        "bogusField": 1,
    }
    with pytest.raises(ConfigError, match="field 'bogusField'"):
        infra_k8s.apply_objects([config_map], provider)


def test_objects_are_ordered_namespace_first_pods_after_their_inputs(dev):
    plan = infra_k8s.plan_objects(build_objects(dev.result.deploy))
    after = {p.kind: {kind for kind, _ in p.after} for p in plan}
    assert plan[0].kind == "Namespace"
    assert after["Namespace"] == set()
    assert after["Deployment"] == {"Namespace", "ConfigMap", "ServiceAccount"}
    assert after["HorizontalPodAutoscaler"] == {"Namespace", "Deployment"}
    assert after["Service"] == {"Namespace"}
    sa = next(p for p in plan if p.kind == "ServiceAccount")
    assert sa.args["automount_service_account_token"] is False
    assert sa.logical_name == "mlkit-dev/mlkit-serve"


def test_duplicate_objects_are_refused():
    pulumi.runtime.set_mocks(
        RecordingMocks(), project="mlkit", stack="t", preview=False
    )

    @pulumi.runtime.test
    def check():
        provider = infra_k8s.existing_cluster_provider(None, "ctx")
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
        with pytest.raises(ConfigError, match="two ConfigMap objects are named 'x'"):
            infra_k8s.apply_objects([obj, obj], provider)
        applied = infra_k8s.apply_objects([obj], provider)
        with pytest.raises(KeyError, match="0 objects of kind 'Service'"):
            applied.get("Service")

    check()


def test_gke_kubeconfig_holds_no_credentials():
    text = infra_k8s.gke_kubeconfig("c", "10.0.0.2", "Q0E=")
    config = yaml.safe_load(text)
    assert config["current-context"] == "c"
    user = config["users"][0]["user"]
    assert user["exec"]["provideClusterInfo"] is True
    for word in ("token", "password", "client-key-data", "client-certificate-data"):
        assert word not in text


# --- the preview report and script --------------------------------------------


def test_stack_file_config_skips_secure_values_and_encodes_structures(tmp_path):
    (tmp_path / "Pulumi.s.yaml").write_text(
        "config:\n"
        "  mlkit:zones: [a, b]\n"
        "  node_spot: true\n"
        "  mlkit:kubeconfig:\n"
        "    secure: AAABAGxvbmc=\n"
    )
    values = stack_file_config("s", tmp_path)
    assert values == {"mlkit:zones": '["a", "b"]', "mlkit:node_spot": "true"}
    with pytest.raises(ConfigError, match="no such stack file"):
        stack_file_config("absent", tmp_path)
    (tmp_path / "Pulumi.bad.yaml").write_text("config: [1, 2]\n")
    with pytest.raises(ConfigError, match="expected a mapping under 'config'"):
        stack_file_config("bad", tmp_path)
    (tmp_path / "Pulumi.broken.yaml").write_text("config: {a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        stack_file_config("broken", tmp_path)


def test_preview_report_lists_resources_with_key_inputs():
    report = preview_report("prod", overrides={"model_sha": MODEL_SHA}, full=True)
    assert report["stack"] == "prod"
    assert report["placeholders"] == {"mlkit:git_sha": "0000000"}
    assert report["resource_count"] == len(report["resources"])
    assert report["counts_by_type"][CLUSTER] == 1
    cluster = next(r for r in report["resources"] if r["type"] == CLUSTER)
    assert cluster["key_inputs"]["privateClusterConfig.enablePrivateNodes"] is True
    assert cluster["key_inputs"]["releaseChannel.channel"] == "STABLE"
    assert cluster["inputs"]["name"] == "mlkit-prod"
    hpa = next(r for r in report["resources"] if r["type"] == HPA)
    assert hpa["key_inputs"]["spec.minReplicas"] == 2  # an int again, not 2.0
    provider = next(r for r in report["resources"] if r["type"] == K8S_PROVIDER)
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    assert report["outputs"]["model_sha"] == MODEL_SHA
    json.dumps(report)  # JSON-ready


def test_mocks_answer_provider_calls_with_nothing():
    args = pulumi.runtime.MockCallArgs(token="gcp:x/y:z", args={}, provider="")
    assert RecordingMocks().call(args) == ({}, [])


def test_key_inputs_of_an_unlisted_type():
    from mlkit_infra.mocks import Declared

    other = Declared(
        type="kubernetes:batch/v1:Job", name="j", inputs={"metadata": {"name": "j"}}
    )
    assert key_inputs(other) == {"metadata.name": "j"}
    assert key_inputs(Declared(type="x:y:Z", name="z", inputs={"a": 1})) == {}


def test_mock_preview_script_main(tmp_path, capsys):
    import mock_preview

    out = tmp_path / "report" / "dev.json"
    assert mock_preview.main(["--stack", "dev", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["placeholders"]["mlkit:model_sha"] == PLACEHOLDER_MODEL_SHA
    assert {r["type"] for r in report["resources"]} >= K8S_KINDS | {CLUSTER, NAT}
    assert "resources ->" in capsys.readouterr().err

    assert mock_preview.main(["--stack", "dev", "--set", f"model_sha={MODEL_SHA}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "mlkit:model_sha" not in printed["placeholders"]

    assert mock_preview.main(["--stack", "dev", "--set", "no-equals-sign"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    assert mock_preview.main(["--stack", "dev", "--set", "node_min_count=9"]) == 2
    assert "node_min_count (9)" in capsys.readouterr().err


def test_mock_preview_runs_as_documented(tmp_path):
    # The command the README and the book show, in a fresh interpreter.
    out = tmp_path / "out.json"
    script = Path(INFRA_DIR) / "mock_preview.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--stack", "dev", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(out.read_text())["counts_by_type"][NODE_POOL] == 1


def test_preview_report_order_is_stable():
    # The engine registers resources in a varying order; the report does not.
    first = preview_report("dev")
    second = preview_report("dev")
    assert [r["name"] for r in first["resources"]] == [
        r["name"] for r in second["resources"]
    ]
    types = [r["type"] for r in first["resources"]]
    assert types[0].startswith("pulumi:providers:")
    assert types[-1] == HPA  # the Kubernetes objects last, in apply order
    assert types.index("kubernetes:core/v1:Namespace") < types.index(DEPLOYMENT)


def test_readme_documents_every_config_key():
    readme = (INFRA_DIR / "README.md").read_text()
    for key in [*StackConfig.model_fields, "kubeconfig"]:
        assert f"| `{key}` |" in readme, key
