"""The managed Secret end to end: never overwrite a Secret the operator does not manage,
recreate a deleted one, repair an edited one; ClusterTokenWorkspace.allowedNamespaces."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from apitoken_operator.kube.resources import ApiToken, ClusterTokenWorkspace
from support.operator import (
    OPERATOR_NAMESPACE,
    OperatorTest,
    ServiceAdmin,
    Workspace,
    api_token,
    condition,
    create_cluster_workspace,
    eventually,
    get_or_none,
    merge_patch,
    ready_token,
    reason,
    release_leftovers,
    requests,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e


def ready_with(kube: Client, namespace: str, token_id: str, name: str = "tok") -> Any:
    """Ready, and the status describes `token_id` (a stale Ready from before does not count)."""

    def probe() -> Any:
        obj = kube.get(ApiToken, name, namespace=namespace)
        ok = condition(obj, "Ready") == "True" and status_of(obj).get("tokenId") == token_id
        return obj if ok else None

    return eventually(f"ApiToken {name} Ready with token {token_id}", probe, timeout=30)


def with_reason(kube: Client, namespace: str, wanted: str, name: str = "tok") -> Any:
    def probe() -> Any:
        obj = kube.get(ApiToken, name, namespace=namespace)
        return obj if reason(obj) == wanted else None

    return eventually(f"Ready reason {wanted}", probe, timeout=30)


def secret_token_id(kube: Client, namespace: str, name: str = "tok") -> str | None:
    secret = get_or_none(kube, Secret, name, namespace)
    if secret is None:
        return None
    annotations = (secret.metadata.annotations if secret.metadata else None) or {}
    return annotations.get("apitoken.dev/token-id")


def test_a_secret_the_operator_does_not_manage_is_left_alone(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    kube.create(
        Secret(metadata=ObjectMeta(name="tok", namespace=ns), stringData={"mine": "keep me"})
    )
    created = api_token(kube, ns)
    obj = with_reason(kube, ns, "SecretConflict")
    assert condition(obj, "Ready") == "False"
    assert condition(obj, "Stalled") == "True"
    # Looked at again every recheck interval, the status is not written again: it is unchanged.
    # A scheduled run may start from kept bodies, but a Secret it does not manage is read live.
    path = f"/apis/apitoken.dev/v1alpha1/namespaces/{ns}/apitokens/tok"
    secret_path = f"/api/v1/namespaces/{ns}/secrets/tok"
    runs, writes = (
        requests(op.operator, "GET", secret_path),
        requests(op.operator, "PATCH", path + "/status"),
    )
    assert runs >= 1 and writes >= 1
    eventually(
        "another run", lambda: requests(op.operator, "GET", secret_path) >= runs + 1, timeout=20
    )
    assert requests(op.operator, "PATCH", path + "/status") == writes
    assert status_of(kube.get(ApiToken, "tok", namespace=ns)) == status_of(obj)
    assert secret_data(kube, ns, "tok") == {"mine": "keep me"}
    secret = kube.get(Secret, "tok", namespace=ns)
    assert secret.metadata is not None and not secret.metadata.ownerReferences
    assert op.admin.tokens_of(created.metadata.uid) == []
    # Once the person deletes it, the operator takes over.
    kube.delete(Secret, "tok", namespace=ns)
    ready_token(kube, ns)
    assert len(op.admin.tokens_of(created.metadata.uid)) == 1


def test_a_deleted_managed_secret_is_recreated_with_a_new_token(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    created = api_token(kube, ns)
    old = status_of(ready_token(kube, ns))["tokenId"]
    kube.delete(Secret, "tok", namespace=ns)

    def recreated() -> str | None:
        tid = secret_token_id(kube, ns)
        return tid if tid and tid != old else None

    new = eventually("the Secret to be recreated with a new token", recreated, timeout=20)
    ready_with(kube, ns, new)
    eventually("the old token to be deleted", lambda: op.admin.token(old) is None)
    assert [t["id"] for t in op.admin.tokens_of(created.metadata.uid)] == [new]


def test_an_edited_managed_secret_is_repaired(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    created = api_token(kube, ns)
    old = status_of(ready_token(kube, ns))["tokenId"]
    tampered = base64.b64encode(b"not-a-token").decode()
    merge_patch(kube, ns, {"data": {"access_token": tampered}}, kind=Secret)

    def repaired() -> str | None:
        data = secret_data(kube, ns, "tok") or {}
        tid = secret_token_id(kube, ns)
        ok = tid and tid != old and data.get("access_token") not in (None, "not-a-token")
        return tid if ok else None

    new = eventually("the Secret to be repaired", repaired, timeout=20)
    ready_with(kube, ns, new)
    data = secret_data(kube, ns, "tok")
    assert data is not None and op.admin.introspect(data["access_token"])["active"]
    eventually("the old token to be deleted", lambda: op.admin.token(old) is None)
    assert [t["id"] for t in op.admin.tokens_of(created.metadata.uid)] == [new]


@pytest.fixture
def cluster_workspace(
    kube: Client, workspace: Workspace, service_admin: ServiceAdmin
) -> Iterator[str]:
    """A ClusterTokenWorkspace allowing only a namespace that does not exist."""
    name = f"ctw-{workspace.namespace}"[:63]
    create_cluster_workspace(
        kube, name, service_admin, allowedNamespaces={"names": ["somewhere-else"]}
    )
    yield name
    # Its finalizer waits for the ApiTokens that use it: release them first.
    release_leftovers(kube, workspace.namespace)
    kube.delete(ClusterTokenWorkspace, name)
    kube.delete(Secret, name, namespace=OPERATOR_NAMESPACE)


def test_cluster_workspace_allowed_namespaces_is_enforced(
    kube: Client, op: OperatorTest, cluster_workspace: str
) -> None:
    ns = op.namespace
    created = api_token(
        kube, ns, workspaceRef={"name": cluster_workspace, "kind": "ClusterTokenWorkspace"}
    )
    obj = with_reason(kube, ns, "NotAllowed")
    assert condition(obj, "Stalled") == "True"
    assert secret_data(kube, ns, "tok") is None
    assert op.admin.tokens_of(created.metadata.uid) == []
    # Allowing the namespace by label (test namespaces carry apitoken.dev/test=true) lets the
    # ApiToken proceed at its next look, without touching the ApiToken.
    kube.patch(
        ClusterTokenWorkspace,
        cluster_workspace,
        {
            "spec": {
                "allowedNamespaces": {
                    "names": ["somewhere-else"],
                    "selector": {"matchLabels": {"apitoken.dev/test": "true"}},
                }
            }
        },
        patch_type=PatchType.MERGE,
    )
    status = status_of(ready_token(kube, ns))
    assert [t["id"] for t in op.admin.tokens_of(created.metadata.uid)] == [status["tokenId"]]
    # The operator's credential for the cluster workspace lives in its own namespace.
    credential = kube.get(
        Secret, f"ctokws-{cluster_workspace}-credential", namespace=OPERATOR_NAMESPACE
    )
    assert credential.metadata is not None
    assert (credential.metadata.labels or {}).get("app.kubernetes.io/managed-by") == (
        "apitoken-operator"
    )
