"""The operator end to end: generate, refresh, re-issue, disable, delete, against the real
kube-apiserver, the real token service (access tokens living 6 s) and `apitoken-operator run`."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube_resources import ApiToken
from support.operator import (
    RunningOperator,
    ServiceAdmin,
    Workspace,
    api_token,
    condition,
    e2e_service,
    eventually,
    operator_namespace,
    running_operator,
    secret_data,
    service_admin,
    status_of,
    workspace,
)

pytestmark = pytest.mark.e2e
# Fixtures used through pytest's name lookup.
__fixtures__ = (e2e_service, service_admin, operator_namespace, running_operator, workspace)


def ready_token(kube: Client, namespace: str, name: str = "tok") -> Any:
    def probe() -> Any:
        obj = kube.get(ApiToken, name, namespace=namespace)
        return obj if condition(obj, "Ready") == "True" else None

    return eventually(f"ApiToken {name} to be Ready", probe, timeout=30)


def test_generate_writes_the_secret_and_status(
    kube: Client,
    workspace: Workspace,
    service_admin: ServiceAdmin,
    running_operator: RunningOperator,
) -> None:
    ns = workspace.namespace
    created = api_token(
        kube,
        ns,
        lifetimeDays=7,
        secretTemplate={"labels": {"team": "billing"}, "annotations": {"note": "hi"}},
    )
    obj = ready_token(kube, ns)
    status = status_of(obj)
    uid = created.metadata.uid
    secret = kube.get(Secret, "tok", namespace=ns)
    assert secret.metadata is not None
    assert secret.metadata.labels == {
        "app.kubernetes.io/managed-by": "apitoken-operator",
        "team": "billing",
    }
    annotations = secret.metadata.annotations or {}
    assert annotations["apitoken.dev/token-id"] == status["tokenId"]
    assert annotations["apitoken.dev/data-hash"].startswith("sha256:")
    assert annotations["note"] == "hi"
    owners = secret.metadata.ownerReferences or []
    assert [(o.kind, o.name, o.uid) for o in owners] == [("ApiToken", "tok", uid)]
    data = secret_data(kube, ns, "tok")
    assert data is not None
    assert set(data) == {"access_token", "refresh_token", "token_type", "expires_at"}
    assert data["token_type"] == "Bearer"
    # The token exists at the service, tagged with the ApiToken's UID.
    listed = service_admin.tokens_of(uid)
    assert [(t["id"], t["status"], t["name"]) for t in listed] == [
        (status["tokenId"], "active", f"{ns}/tok")
    ]
    assert service_admin.introspect(data["access_token"])["active"] is True
    assert status["secretName"] == "tok"
    assert status["observedGeneration"] == 1
