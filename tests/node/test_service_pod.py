"""The token service as a Pod from charts/apitoken-service, on the real local node: SQLite on a
PersistentVolumeClaim bound to a hostPath PersistentVolume of this test, the key-encryption key
from a Secret, the schema migrated by the chart's init container, readiness and liveness on
/readyz and /healthz. The operator, a Pod from its own chart, reaches it through the Service's
DNS name, and an ApiToken goes Ready with an access token the service issued."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lightkube import Client
from lightkube.core.client import LabelSelector
from lightkube.models.core_v1 import (
    HostPathVolumeSource,
    ObjectReference,
    PersistentVolumeSpec,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import (
    Namespace,
    PersistentVolume,
    PersistentVolumeClaim,
    Pod,
    Secret,
)

from apitoken_service.key_encryption import generate_key_file
from localkube import Cluster
from support.helm import OPERATOR_CHART, SERVICE_CHART
from support.operator import api_token, create_workspace, eventually, ready_token, status_of
from support.pods import Release, chart_release, kubectl

pytestmark = pytest.mark.node

SERVICE_NAMESPACE = "apitoken-service-pod"
OPERATOR_NAMESPACE = "apitoken-service-op"
SERVICE = "tokens-apitoken-service"
URL = f"http://{SERVICE}.{SERVICE_NAMESPACE}.svc.cluster.local:8080"
STORAGE_CLASS = "apitoken-test-hostpath"
SELECTOR: LabelSelector = {"app.kubernetes.io/instance": "tokens"}


@pytest.fixture(scope="module")
def service_release(
    cluster: Cluster, kube: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The chart installed with a hostPath PersistentVolume (this test's folder) for its claim;
    yields that folder, where the SQLite database lives."""
    folder = tmp_path_factory.mktemp("service")
    data = folder / "data"
    data.mkdir()
    os.chown(data, 65532, 65532)  # hostPath volumes keep their owner (no fsGroup change)
    kek = folder / "kek"
    generate_key_file(kek)
    kube.create(Namespace(metadata=ObjectMeta(name=SERVICE_NAMESPACE)))
    kube.create(
        Secret(
            metadata=ObjectMeta(name="service-kek", namespace=SERVICE_NAMESPACE),
            stringData={"kek": kek.read_text()},
        )
    )
    volume = f"apitoken-service-pod-{folder.name}"[:63]
    kube.create(
        PersistentVolume(
            metadata=ObjectMeta(name=volume),
            spec=PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                accessModes=["ReadWriteOnce"],
                storageClassName=STORAGE_CLASS,
                persistentVolumeReclaimPolicy="Retain",
                hostPath=HostPathVolumeSource(path=str(data), type="Directory"),
                # Only this test's claim may bind it.
                claimRef=ObjectReference(namespace=SERVICE_NAMESPACE, name=f"{SERVICE}-data"),
            ),
        )
    )
    try:
        # No wait on uninstall: the namespace's deletion takes the Pod and the claim with it.
        with chart_release(
            cluster, kube, SERVICE_CHART, "tokens", SERVICE_NAMESPACE, folder / "helm", wait=False
        ) as release:
            release.apply(
                "keyEncryptionKey.existingSecret=service-kek",
                f"database.sqlite.persistence.storageClassName={STORAGE_CLASS}",
                "database.sqlite.persistence.keep=false",
                "settings.accessTokenTtlSeconds=8",
                "readiness.periodSeconds=2",
                "liveness.initialDelaySeconds=2",
                "liveness.periodSeconds=2",
            )
            yield data
    finally:
        kube.delete(PersistentVolume, volume)


@pytest.fixture(scope="module")
def operator_pod(
    cluster: Cluster, kube: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    home = tmp_path_factory.mktemp("helm-op")
    with chart_release(cluster, kube, OPERATOR_CHART, "svc-op", OPERATOR_NAMESPACE, home) as op:
        yield op


def _service_pod(kube: Client) -> Pod:
    (pod,) = kube.list(Pod, namespace=SERVICE_NAMESPACE, labels=SELECTOR)
    return pod


def test_operator_pod_uses_the_service_pod_by_its_dns_name(
    cluster: Cluster,
    kube: Client,
    namespace: str,
    service_release: Path,
    operator_pod: Release,
) -> None:
    claim = kube.get(PersistentVolumeClaim, f"{SERVICE}-data", namespace=SERVICE_NAMESPACE)
    assert claim.status is not None and claim.status.phase == "Bound"
    pod = _service_pod(kube)
    assert pod.status is not None and pod.spec is not None
    (migrate,) = pod.status.initContainerStatuses or []
    assert migrate.state is not None and migrate.state.terminated is not None
    assert migrate.state.terminated.exitCode == 0
    (server,) = pod.status.containerStatuses or []
    assert server.ready and server.restartCount == 0  # /readyz passed, /healthz keeps passing
    assert pod.spec.securityContext is not None and pod.spec.securityContext.runAsUser == 65532
    assert (service_release / "apitoken-service.db").is_file()
    ip = pod.status.podIP
    assert httpx.get(f"http://{ip}:8080/readyz", timeout=5).status_code == 200

    # A workspace and its admin, made in the Pod; the credential only crosses this pipe.
    init = kubectl(
        cluster,
        "-n",
        SERVICE_NAMESPACE,
        "exec",
        f"deploy/{SERVICE}",
        "-c",
        "service",
        "--",
        "apitoken-service",
        "init",
        "--workspace",
        "acme",
        "--admin",
        "operator",
    )
    assert init.returncode == 0, init.stderr[-2000:]
    credential = json.loads(init.stdout)

    operator_pod.apply(
        f"watchNamespaces={{{namespace}}}",
        "settings.refreshMargin=1s",
        "settings.backoffBase=1s",
    )
    create_workspace(
        kube,
        namespace,
        url=URL,
        service_workspace="acme",
        bootstrap_value=credential["refreshToken"],
    )
    api_token(kube, namespace, lifetimeDays=1)
    status = status_of(ready_token(kube, namespace))
    secret = kube.get(Secret, "tok", namespace=namespace)
    access = base64.b64decode((secret.data or {})["access_token"]).decode()
    refresh = base64.b64decode((secret.data or {})["refresh_token"]).decode()
    # The service issued it: it introspects as active there, for the token's id.
    introspected = httpx.post(
        f"http://{ip}:8080/oauth2/introspect",
        data={"token": access},
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    ).json()
    assert introspected["active"] is True
    # And a refresh goes through the Service name too (access tokens live 8 s here).
    eventually(
        "a refreshed access token",
        lambda: (
            (kube.get(Secret, "tok", namespace=namespace).data or {})["access_token"]
            != (secret.data or {})["access_token"]
        ),
        timeout=40,
    )
    assert status["tokenId"]
    # Token values never reach the service's database (SQLite file, its journal and WAL).
    for stored in service_release.iterdir():
        content = stored.read_bytes()
        assert access.encode() not in content and refresh.encode() not in content, stored
    assert _service_pod(kube).status.containerStatuses[0].restartCount == 0  # type: ignore[index,union-attr]
