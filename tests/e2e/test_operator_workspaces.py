"""Workspaces end to end: the operator's own credential (bootstrap used once, rotated, a stale
re-applied copy never presented again, a new bootstrap value replaces it), CredentialsMissing,
and refresh-only mode (provider oauth2) importing a hand-made refresh token."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken, TokenWorkspace
from support.operator import (
    OperatorTest,
    api_token,
    apply_bootstrap_secret,
    condition,
    eventually,
    reason,
    requests,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e


def ws_status(kube: Client, namespace: str, name: str = "main") -> dict[str, Any]:
    return status_of(kube.get(TokenWorkspace, name, namespace=namespace))


def test_the_credential_rotates_and_a_stale_bootstrap_copy_is_never_replayed(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    bootstrap = secret_data(kube, ns, "bootstrap")
    assert bootstrap is not None
    status = ws_status(kube, ns)
    credential_id = status["credentialTokenId"]
    assert status["bootstrapDigest"].startswith("sha256:")
    assert bootstrap["refresh_token"] not in str(status)
    credential_secret = f"{op.workspace.name}-apitoken-credential"
    first = secret_data(kube, ns, credential_secret)
    assert first is not None

    def rotated() -> dict[str, str] | None:
        now = secret_data(kube, ns, credential_secret)
        return now if now and now["refresh_token"] != first["refresh_token"] else None

    eventually("the operator's credential to rotate", rotated, timeout=15)
    # A GitOps tool re-applies the (stale, already used) bootstrap value: recreated as is.
    kube.delete(Secret, "bootstrap", namespace=ns)
    bootstrap_path = f"/api/v1/namespaces/{ns}/secrets/bootstrap"
    reads = requests(op.operator, "GET", bootstrap_path)
    apply_bootstrap_secret(kube, ns, bootstrap["refresh_token"])
    # Presenting it again would be a replay that makes the service disable the whole token.
    # Let the operator read it a few times (each run does), while an ApiToken uses the workspace.
    api_token(kube, ns)
    eventually(
        "an ApiToken through the workspace",
        lambda: condition(kube.get(ApiToken, "tok", namespace=ns), "Ready") == "True",
    )
    eventually(
        "the operator to read the re-applied bootstrap Secret a few times",
        lambda: requests(op.operator, "GET", bootstrap_path) >= reads + 3,
    )
    assert condition(kube.get(TokenWorkspace, "main", namespace=ns), "Ready") == "True"
    assert (op.admin.token(credential_id) or {}).get("status") == "active"
    assert ws_status(kube, ns)["credentialTokenId"] == credential_id

    # A new bootstrap value replaces the credential; the old credential token is disabled.
    apply_bootstrap_secret(kube, ns, op.admin.new_bootstrap_value(f"operator-2-{ns}"))

    def replaced() -> str | None:
        tid = ws_status(kube, ns).get("credentialTokenId")
        return str(tid) if tid and tid != credential_id else None

    eventually("the credential to be replaced", replaced, timeout=20)
    eventually(
        "the old credential token to be disabled",
        lambda: (op.admin.token(credential_id) or {}).get("status") == "disabled",
    )
    assert condition(kube.get(TokenWorkspace, "main", namespace=ns), "Ready") == "True"


def test_a_workspace_without_its_bootstrap_secret_reports_credentials_missing(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    kube.create(
        TokenWorkspace(
            metadata=ObjectMeta(name="empty", namespace=ns),
            spec={
                "url": op.admin.service.base_url,
                "workspace": op.admin.service.workspace,
                "credentialsSecretRef": {"name": "not-there"},
            },
        )
    )

    def missing() -> Any:
        obj = kube.get(TokenWorkspace, "empty", namespace=ns)
        return obj if reason(obj) == "CredentialsMissing" else None

    obj = eventually("Ready=False reason CredentialsMissing", missing)
    assert condition(obj, "Ready") == "False"
    assert condition(obj, "Stalled") == "True"
    # An ApiToken using it waits and says why.
    created = api_token(kube, ns, name="waits", workspace="empty")

    def waiting() -> Any:
        obj = kube.get(ApiToken, "waits", namespace=ns)
        return obj if reason(obj, "Reconciling") == "WorkspaceNotReady" else None

    eventually("the ApiToken to wait for its workspace", waiting)
    assert op.admin.tokens_of(created.metadata.uid) == []


def test_refresh_only_mode_imports_a_hand_made_refresh_token(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    kube.create(
        TokenWorkspace(
            metadata=ObjectMeta(name="provider", namespace=ns),
            spec={
                "provider": "oauth2",
                "oauth2": {"tokenEndpoint": f"{op.admin.service.base_url}/oauth2/token"},
            },
        )
    )
    handmade = op.admin.new_bootstrap_value(f"handmade-{ns}")
    apply_bootstrap_secret(kube, ns, handmade, name="handmade")
    api_token(
        kube, ns, name="imported", workspace="provider", refreshTokenSecretRef={"name": "handmade"}
    )

    def ready() -> Any:
        obj = kube.get(ApiToken, "imported", namespace=ns)
        return obj if condition(obj, "Ready") == "True" else None

    status = status_of(eventually("the imported token to be Ready", ready))
    assert status["importedTokenDigest"].startswith("sha256:")
    assert status["tokenId"].startswith("import-")
    data = secret_data(kube, ns, "imported")
    assert data is not None and data["refresh_token"] != handmade
    assert op.admin.introspect(data["access_token"])["active"] is True

    def refreshed() -> bool:
        now = secret_data(kube, ns, "imported") or {}
        return now.get("access_token") not in (None, data["access_token"])

    eventually("a refresh in refresh-only mode", refreshed, timeout=15)
