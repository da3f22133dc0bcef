"""The chart's operator as a Pod on the real local node, with the image `make images` builds and
the chart's own ServiceAccount and RBAC: it logs in in-cluster, serves an ApiToken through its
lifecycle against the real token service, and its metrics are scraped from the Pod."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Namespace, Pod, Secret

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from localkube.node import GATEWAY
from support.operator import ServiceAdmin, api_token, create_workspace, eventually, ready_token
from support.tokenservice import RunningTokenService, start_token_service

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "apitoken-operator"
RELEASE_NAMESPACE = "apitoken-operator-pod"


def _helm() -> Path:
    done = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh"), "helm"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(done.stdout.strip().split("=", 1)[1]) / "helm"


@pytest.fixture(scope="module")
def pod_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTokenService]:
    # Bound on every local address so that Pods reach it at the bridge's address.
    with start_token_service(
        tmp_path_factory.mktemp("svc"), access_token_ttl=8, extra_args=("--host", "0.0.0.0")
    ) as running:
        yield running


@pytest.fixture(scope="module")
def pod_admin(pod_service: RunningTokenService) -> Iterator[ServiceAdmin]:
    """The service's workspace admin: each test gets a fresh bootstrap value (used once)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=pod_service.base_url, timeout=10, limits=limits) as http:
        yield ServiceAdmin(pod_service, http, refresh_token=pod_service.credential["refreshToken"])


@pytest.fixture(scope="module")
def chart_operator(cluster: Cluster, kube: Client, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("helm")
    env = {
        "HELM_CACHE_HOME": str(home / "c"),
        "HELM_CONFIG_HOME": str(home / "f"),
        "HELM_DATA_HOME": str(home / "d"),
        "PATH": "/usr/bin:/bin",
    }
    argv = [
        str(_helm()),
        "install",
        "op",
        str(CHART),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--skip-crds",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "logFormat=plain",
        "--set",
        "verbose=true",
        "--set",
        "settings.refreshMargin=1s",
        "--set",
        "settings.backoffBase=1s",
        "--set",
        "settings.recheckInterval=5s",
        "--set",
        "liveness.probe.initialDelaySeconds=2",
        "--set",
        "liveness.probe.periodSeconds=2",
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    yield
    subprocess.run(
        [
            argv[0],
            "uninstall",
            "op",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            RELEASE_NAMESPACE,
            "--wait",
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    try:
        kube.delete(Namespace, RELEASE_NAMESPACE)
    except ApiError:
        pass


def _operator_pod(kube: Client) -> Pod:
    pods = list(kube.list(Pod, namespace=RELEASE_NAMESPACE))
    assert len(pods) == 1, [p.metadata.name for p in pods if p.metadata]
    return pods[0]


def _access_token(kube: Client, namespace: str) -> str | None:
    try:
        secret = kube.get(Secret, "tok", namespace=namespace)
    except ApiError:
        return None
    value = (secret.data or {}).get("access_token")
    return base64.b64decode(value).decode() if value else None


def test_chart_pod_serves_an_api_token(
    kube: Client,
    namespace: str,
    chart_operator: None,
    pod_service: RunningTokenService,
    pod_admin: ServiceAdmin,
) -> None:
    pod = _operator_pod(kube)
    assert pod.spec is not None and pod.status is not None
    assert pod.spec.serviceAccountName == "op-apitoken-operator"
    statuses = pod.status.containerStatuses or []
    assert statuses and statuses[0].ready and statuses[0].restartCount == 0

    port = pod_service.base_url.rsplit(":", 1)[1]
    create_workspace(
        kube,
        namespace,
        url=f"http://{GATEWAY}:{port}",
        service_workspace=pod_service.workspace,
        bootstrap_value=pod_admin.new_bootstrap_value(f"operator-{namespace}"),
    )
    api_token(kube, namespace, lifetimeDays=1)
    ready_token(kube, namespace)
    first = eventually("the Secret's access token", lambda: _access_token(kube, namespace), 30)
    # A refresh: the 8 s access token is replaced while the Pod runs.
    eventually(
        "a refreshed access token",
        lambda: (_access_token(kube, namespace) or first) != first,
        timeout=40,
    )

    # Metrics straight from the Pod's address on the bridge.
    ip = _operator_pod(kube).status.podIP  # type: ignore[union-attr]
    metrics = httpx.get(f"http://{ip}:9090/metrics", timeout=5).text
    assert "apitoken" in metrics

    kube.delete(ApiToken, "tok", namespace=namespace)
    eventually(
        "the ApiToken and its Secret to be gone",
        lambda: _access_token(kube, namespace) is None,
        timeout=40,
    )
    # Still the same Pod: the liveness probe (every 2 s here) kept passing.
    assert (_operator_pod(kube).status.containerStatuses or [])[0].restartCount == 0  # type: ignore[union-attr]
