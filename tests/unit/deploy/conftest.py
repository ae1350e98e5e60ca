"""Fixtures for the cluster tests: a fake Kubernetes API server (this is a fake
API server, not a cluster) and a kubeconfig file that points at it."""

from __future__ import annotations

import pytest
import yaml

from tests.fake_kube import FakeKube


@pytest.fixture
def fake_kube():
    """A running FakeKube with pod metrics (metrics.k8s.io) served."""
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def kubeconfig(fake_kube, tmp_path):
    """A kubeconfig file whose current context ``fake`` is ``fake_kube``
    (plain http, a dummy bearer token)."""
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(fake_kube.kubeconfig()), encoding="utf-8")
    return path


@pytest.fixture
def cluster(kubeconfig):
    """A Cluster connected to ``fake_kube``, closed after the test."""
    from mlkit.deploy.cluster import connect

    with connect(kubeconfig, request_timeout_s=5.0) as connected:
        yield connected
