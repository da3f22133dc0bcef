"""Deleting a whole namespace with a TokenWorkspace, its bootstrap and credential Secrets and
ApiTokens in it: the namespace goes on its own, and every ApiToken is cleaned up at the service
per its deletionPolicy, because the operator's credential Secret is kept (finalizer
apitoken.dev/credential-in-use) until no ApiToken using the workspace remains; then the
operator's own token in the workspace is disabled too."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from apitoken_operator.kube.resources import ApiToken, ClusterTokenWorkspace, TokenWorkspace
from support.operator import (
    OPERATOR_NAMESPACE,
    OperatorTest,
    RunningOperator,
    ServiceAdmin,
    abandon,
    api_token,
    create_cluster_workspace,
    eventually,
    get_or_none,
    gone,
    leaks,
    merge_patch,
    ready_token,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e

CREDENTIAL_FINALIZER = "apitoken.dev/credential-in-use"


def test_deleting_the_namespace_cleans_up_every_token_and_finishes_on_its_own(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    deleted = api_token(kube, ns, name="deleted", deletionPolicy="Delete")
    disabled = api_token(kube, ns, name="disabled", deletionPolicy="Disable")
    ids = {}
    for obj in (deleted, disabled):
        name = obj.metadata.name
        ids[name] = status_of(ready_token(kube, ns, name))["tokenId"]
        assert secret_data(kube, ns, name) is not None  # its values join the leak scan
    credential = kube.get(Secret, f"{op.workspace.name}-apitoken-credential", namespace=ns)
    assert credential.metadata is not None
    assert CREDENTIAL_FINALIZER in (credential.metadata.finalizers or [])
    credential_id = status_of(kube.get(TokenWorkspace, op.workspace.name, namespace=ns))[
        "credentialTokenId"
    ]

    logged_before = len(op.operator.logs())
    kube.delete(Namespace, ns)

    def cleaned_up() -> dict[str, Any] | None:
        gone = op.admin.token(ids["deleted"])
        kept = op.admin.token(ids["disabled"])
        if gone is None and kept is not None and kept["status"] == "disabled":
            return kept
        return None

    eventually("the tokens to be deleted and disabled at the service", cleaned_up, timeout=60)
    eventually("the namespace to disappear", lambda: gone(kube, Namespace, ns), timeout=60)
    assert op.admin.tokens_of(deleted.metadata.uid) == []
    # The namespace's deletion may remove the managed Secret a moment before the ApiToken is
    # marked for deletion; the operator does not re-issue it in a terminating namespace (no
    # Secret could hold the token), so the one token there was is all there is.
    statuses = {t["id"]: t["status"] for t in op.admin.tokens_of(disabled.metadata.uid)}
    assert statuses == {ids["disabled"]: "disabled"}, statuses
    # Nor for the ApiToken with deletionPolicy Delete, whose extra token would leave no trace
    # at the service: the operator logs every token it issues.
    issued = [
        line
        for line in op.operator.logs()[logged_before:].splitlines()
        if ns in line and ("Reissued" in line or "Generated" in line)
    ]
    assert issued == [], issued
    # The operator's own token in the workspace went with it.
    assert (op.admin.token(credential_id) or {}).get("status") == "disabled"
    found = leaks(kube, ns, op.operator, op.admin.service)
    assert not found, found


def test_the_credential_secret_is_held_while_an_api_token_uses_the_workspace(
    kube: Client, op: OperatorTest
) -> None:
    """Like a PersistentVolumeClaim in use (kubernetes.io/pvc-protection): deleting the
    credential Secret by hand waits for the ApiTokens; the workspace keeps working meanwhile."""
    ns = op.namespace
    name = f"{op.workspace.name}-apitoken-credential"
    tok = api_token(kube, ns)
    ready_token(kube, ns)
    kube.delete(Secret, name, namespace=ns)
    held = kube.get(Secret, name, namespace=ns)
    assert held.metadata is not None and held.metadata.deletionTimestamp is not None
    # Still usable: a re-issue goes through the management API with that credential.
    first = status_of(kube.get(ApiToken, "tok", namespace=ns))["tokenId"]
    merge_patch(kube, ns, {"spec": {"lifetimeDays": 2}})

    def reissued() -> str | None:
        tid = status_of(kube.get(ApiToken, "tok", namespace=ns)).get("tokenId")
        return str(tid) if tid and tid != first else None

    eventually("a re-issue through the held credential", reissued, timeout=30)
    kube.delete(ApiToken, "tok", namespace=ns)

    def released() -> bool:
        with contextlib.suppress(ApiError):
            kube.get(Secret, name, namespace=ns)
            return False
        return True

    eventually("the credential Secret to go once no ApiToken uses it", released, timeout=60)
    assert op.admin.tokens_of(tok.metadata.uid) == []


def test_deleting_a_namespace_whose_tokens_use_a_cluster_workspace(
    kube: Client,
    namespace: str,
    service_admin: ServiceAdmin,
    running_operator: RunningOperator,
) -> None:
    """The credential of a ClusterTokenWorkspace lives in the operator's namespace: it is not
    deleted with the ApiTokens' namespace, so it needs (and gets) no finalizer, which would
    only keep the operator's namespace from being deleted once the operator is gone. It goes
    with the workspace, and the operator's own token with it."""
    running_operator.wait_ready()
    name = f"ctw-{namespace}"[:63]
    credential = f"ctokws-{name}-credential"
    create_cluster_workspace(kube, name, service_admin)
    try:
        created: Any = kube.create(
            ApiToken(
                metadata=ObjectMeta(name="tok", namespace=namespace),
                spec={"workspaceRef": {"kind": "ClusterTokenWorkspace", "name": name}},
            )
        )
        token_id = status_of(ready_token(kube, namespace))["tokenId"]
        assert secret_data(kube, namespace, "tok") is not None
        held = kube.get(Secret, credential, namespace=OPERATOR_NAMESPACE)
        assert held.metadata is not None
        assert CREDENTIAL_FINALIZER not in (held.metadata.finalizers or [])
        credential_id = status_of(kube.get(ClusterTokenWorkspace, name))["credentialTokenId"]

        kube.delete(Namespace, namespace)
        eventually("the namespace to disappear", lambda: gone(kube, Namespace, namespace), 60)
        assert service_admin.token(token_id) is None
        assert service_admin.tokens_of(created.metadata.uid) == []
        held = kube.get(Secret, credential, namespace=OPERATOR_NAMESPACE)
        assert held.metadata is not None and held.metadata.deletionTimestamp is None

        kube.delete(ClusterTokenWorkspace, name)

        def retired() -> bool:
            return (service_admin.token(credential_id) or {}).get("status") == "disabled"

        eventually("the operator's own token to be disabled with its workspace", retired, 30)

        eventually(
            "the workspace's finalizer to be released",
            lambda: gone(kube, ClusterTokenWorkspace, name),
            30,
        )
        found = leaks(kube, namespace, running_operator, service_admin.service)
        assert not found, found
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(ClusterTokenWorkspace, name)
        kube.delete(Secret, name, namespace=OPERATOR_NAMESPACE)


def test_workspace_deletion_waits_for_the_service_and_abandon_lets_it_go(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    credential_id = status_of(kube.get(TokenWorkspace, op.workspace.name, namespace=ns))[
        "credentialTokenId"
    ]
    with op.service.down():
        kube.delete(TokenWorkspace, op.workspace.name, namespace=ns)

        def waiting() -> str | None:
            obj = kube.get(TokenWorkspace, op.workspace.name, namespace=ns)
            annotations = (obj.metadata.annotations if obj.metadata else None) or {}
            progress = annotations.get("apitoken.dev/tokenworkspaces-deleted")
            message = str(json.loads(progress).get("message") or "") if progress else ""
            return message if "waiting to disable the operator's own token" in message else None

        message = eventually("the workspace's deletion to wait for the service", waiting, 30)
        assert "apitoken.dev/abandon=true" in message
        held = kube.get(Secret, f"{op.workspace.name}-apitoken-credential", namespace=ns)
        assert held.metadata is not None
        assert CREDENTIAL_FINALIZER in (held.metadata.finalizers or [])
        abandon(kube, ns, op.workspace.name, TokenWorkspace)

        eventually(
            "the abandoned workspace to be released",
            lambda: gone(kube, TokenWorkspace, op.workspace.name, ns),
            timeout=30,
        )

        def released() -> bool:
            # Garbage collection then removes it (it may take a while to see a new kind).
            held = get_or_none(kube, Secret, f"{op.workspace.name}-apitoken-credential", ns)
            if held is None:
                return True
            return CREDENTIAL_FINALIZER not in ((held.metadata and held.metadata.finalizers) or [])

        eventually("the credential Secret's finalizer to be released", released, 30)
    # Let go without cleanup: the operator's token is still there (valid until it expires).
    assert (op.admin.token(credential_id) or {}).get("status") == "active"
