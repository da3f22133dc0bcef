"""The chart's operator as a Pod on the real local node, with the image `make images` builds and
the chart's own ServiceAccount and RBAC, in both RBAC modes: cluster-wide first, then (after a
watched `helm upgrade` with the Recreate strategy) a list of namespaces. In each mode it logs in
in-cluster and takes an ApiToken through generate, refresh, re-issue and delete against the real
token service, with no request refused; `kubectl auth can-i` shows where it may read Secrets; its
liveness probe keeps passing and its metrics are scraped from the Pod's address on the bridge."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.core.client import LabelSelector
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod, Secret
from lightkube.types import PatchType
from prometheus_client.parser import text_string_to_metric_families

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from localkube.node import GATEWAY
from support.helm import OPERATOR_CHART
from support.operator import (
    ServiceAdmin,
    api_token,
    create_workspace,
    eventually,
    ready_token,
    status_of,
)
from support.pods import PodWatch, Release, can_i, chart_release, kubectl
from support.tokenservice import RunningTokenService, start_token_service

pytestmark = pytest.mark.node

REPO = Path(__file__).resolve().parents[2]
RELEASE_NAMESPACE = "apitoken-operator-pod"
ACCOUNT = f"system:serviceaccount:{RELEASE_NAMESPACE}:op-apitoken-operator"
SELECTOR: LabelSelector = {
    "app.kubernetes.io/instance": "op",
    "app.kubernetes.io/name": "apitoken-operator",
}
# Fast timings, so one lifecycle takes seconds (access tokens live 8 s).
FAST = (
    "logFormat=plain",
    "verbose=true",
    "settings.refreshMargin=1s",
    "settings.backoffBase=1s",
    "settings.recheckInterval=5s",
    "liveness.probe.initialDelaySeconds=2",
    "liveness.probe.periodSeconds=2",
)


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
def operator_release(
    cluster: Cluster, kube: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    home = tmp_path_factory.mktemp("helm")
    with chart_release(cluster, kube, OPERATOR_CHART, "op", RELEASE_NAMESPACE, home) as release:
        yield release


@pytest.fixture(scope="module")
def chart_operator(operator_release: Release) -> None:
    """The chart with its defaults (cluster-wide RBAC), as the module's first tests use it."""
    operator_release.apply(*FAST)


def _operator_pod(kube: Client) -> Pod:
    # An old Pod of a Recreate rollout may linger in a terminal phase until it is removed.
    pods = [
        p
        for p in kube.list(Pod, namespace=RELEASE_NAMESPACE, labels=SELECTOR)
        if not (p.status and p.status.phase in ("Succeeded", "Failed"))
    ]
    assert len(pods) == 1, [p.metadata.name for p in pods if p.metadata]
    return pods[0]


def _ready_and_never_restarted(pod: Pod) -> bool:
    statuses = (pod.status.containerStatuses if pod.status else None) or []
    return bool(statuses) and statuses[0].ready and statuses[0].restartCount == 0


def _access_token(kube: Client, namespace: str) -> str | None:
    try:
        secret = kube.get(Secret, "tok", namespace=namespace)
    except ApiError:
        return None
    value = (secret.data or {}).get("access_token")
    return base64.b64decode(value).decode() if value else None


def _lifecycle(
    kube: Client, namespace: str, service: RunningTokenService, admin: ServiceAdmin
) -> None:
    """generate, refresh, re-issue, delete, with a scrape of the Pod's metrics on the way."""
    port = service.base_url.rsplit(":", 1)[1]
    create_workspace(
        kube,
        namespace,
        url=f"http://{GATEWAY}:{port}",
        service_workspace=service.workspace,
        bootstrap_value=admin.new_bootstrap_value(f"operator-{namespace}"),
    )
    created = api_token(kube, namespace, lifetimeDays=1)
    first_id = status_of(ready_token(kube, namespace))["tokenId"]
    first = eventually("the Secret's access token", lambda: _access_token(kube, namespace), 30)
    # A refresh: the 8 s access token is replaced while the Pod runs.
    eventually(
        "a refreshed access token",
        lambda: (_access_token(kube, namespace) or first) != first,
        timeout=40,
    )
    # A re-issue: a new lifetime asks for a new token.
    kube.patch(
        ApiToken,
        "tok",
        {"spec": {"lifetimeDays": 2}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    eventually(
        "a re-issued token",
        lambda: (
            status_of(kube.get(ApiToken, "tok", namespace=namespace)).get("tokenId")
            not in (None, first_id)
        ),
        timeout=40,
    )
    _scrape(kube, namespace, _access_token(kube, namespace) or "")
    kube.delete(ApiToken, "tok", namespace=namespace)
    eventually(
        "the ApiToken released and its Secret gone",
        lambda: (
            not list(kube.list(ApiToken, namespace=namespace))
            and _access_token(kube, namespace) is None
        ),
        timeout=40,
    )
    # The finalizer's release deleted the tokens at the service (deletionPolicy Delete).
    assert admin.tokens_of(created.metadata.uid) == []


def _no_refusals(cluster: Cluster) -> None:
    """A missing permission shows in the operator's log even where it retries: none here."""
    logs = kubectl(
        cluster, "-n", RELEASE_NAMESPACE, "logs", "deploy/op-apitoken-operator", "--tail=-1"
    )
    assert logs.returncode == 0, logs.stderr
    refused = [ln[:300] for ln in logs.stdout.splitlines() if "Forbidden" in ln or " 403" in ln]
    assert refused == []
    assert "Generated" in logs.stdout


def _scrape(kube: Client, namespace: str, token: str) -> None:
    """Metrics straight from the Pod's address on the bridge: this token's gauge and the
    successful refreshes; never a token value."""
    ip = _operator_pod(kube).status.podIP  # type: ignore[union-attr]
    text = httpx.get(f"http://{ip}:9090/metrics", timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("apitoken_refreshes_total", (("result", "success"),))] >= 1
    assert (
        any(
            name == "apitoken_access_token_expiry_timestamp_seconds"
            and ("namespace", namespace) in labels
            for name, labels in samples
        )
        or namespace not in text
    )  # the gauge goes with the deleted ApiToken
    assert token not in text


def test_chart_pod_serves_an_api_token(
    cluster: Cluster,
    kube: Client,
    namespace: str,
    chart_operator: None,
    pod_service: RunningTokenService,
    pod_admin: ServiceAdmin,
) -> None:
    pod = _operator_pod(kube)
    assert pod.spec is not None
    assert pod.spec.serviceAccountName == "op-apitoken-operator"
    assert _ready_and_never_restarted(pod)
    # Cluster-wide mode: Secrets of every namespace, never deleted.
    assert can_i(cluster, ACCOUNT, "get", "secrets", namespace)
    assert can_i(cluster, ACCOUNT, "list", "secrets", "kube-system")
    assert not can_i(cluster, ACCOUNT, "delete", "secrets", namespace)

    _lifecycle(kube, namespace, pod_service, pod_admin)
    _no_refusals(cluster)
    # Still the same Pod: the liveness probe (every 2 s here) kept passing.
    assert _operator_pod(kube).metadata.name == pod.metadata.name  # type: ignore[union-attr]
    assert _ready_and_never_restarted(_operator_pod(kube))


def test_upgrade_to_namespaced_rbac(
    cluster: Cluster,
    kube: Client,
    namespace: str,
    operator_release: Release,
    chart_operator: None,
    pod_service: RunningTokenService,
    pod_admin: ServiceAdmin,
) -> None:
    """`helm upgrade` to watchNamespaces=[this test's namespace]: the Recreate rollout, watched
    Pod by Pod, never runs the old and the new operator at once; then the operator may read
    Secrets in the namespace it serves and its own, nowhere else, and still runs a lifecycle."""
    other = f"{namespace[:50]}-other"
    kube.create(Namespace(metadata=ObjectMeta(name=other, labels={"apitoken.dev/test": "true"})))
    try:
        old = _operator_pod(kube).metadata.name  # type: ignore[union-attr]
        watch = PodWatch(cluster.client(), RELEASE_NAMESPACE, SELECTOR)
        watch.start(existing=1)
        operator_release.apply(*FAST, f"watchNamespaces={{{namespace}}}")
        new = _operator_pod(kube)
        assert new.metadata is not None and new.metadata.name != old
        new_name = str(new.metadata.name)
        eventually("the new Pod in the watch", lambda: new_name in watch.names, 10)
        assert watch.names[0] == old
        assert watch.most_at_once == 1, watch.names
        assert _ready_and_never_restarted(new)

        assert can_i(cluster, ACCOUNT, "get", "secrets", namespace)
        assert can_i(cluster, ACCOUNT, "get", "secrets", RELEASE_NAMESPACE)
        assert not can_i(cluster, ACCOUNT, "get", "secrets", other)
        assert not can_i(cluster, ACCOUNT, "list", "secrets", other)
        assert not can_i(cluster, ACCOUNT, "patch", "apitokens.apitoken.dev", other)

        # An ApiToken outside the served namespaces is left alone.
        api_token(kube, other)
        try:
            _lifecycle(kube, namespace, pod_service, pod_admin)
        except AssertionError as failed:
            logs = kubectl(cluster, "-n", RELEASE_NAMESPACE, "logs", "deploy/op-apitoken-operator")
            raise AssertionError(f"{failed}\noperator log:\n{logs.stdout[-6000:]}") from None
        _no_refusals(cluster)
        assert not status_of(kube.get(ApiToken, "tok", namespace=other))
        assert _ready_and_never_restarted(_operator_pod(kube))
    finally:
        kube.delete(Namespace, other)
