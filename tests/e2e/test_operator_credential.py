"""The operator's own workspace credential end to end: renewed before it expires (a new token
of its own through the management API, the credential Secret switched to it, the old one
disabled) while ApiTokens stay Ready and are still managed; and Ready=False reason
Unauthorized when the service refuses the credential, recovered by a new bootstrap value.

This module's operator renews its credential 30 s after the bootstrap token was made: the
bootstrap values live 30 days and APITOKEN_OPERATOR_CREDENTIAL_RENEW_BEFORE is 30 s short of
that. The tokens it makes for itself live 60 days, so they are not due again during the run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken, TokenWorkspace
from support.operator import (
    OperatorTest,
    Workspace,
    api_token,
    apply_bootstrap_secret,
    condition,
    events_of,
    eventually,
    merge_patch,
    ready_token,
    reason,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e

BOOTSTRAP_LIFETIME = timedelta(days=30)  # what ServiceAdmin.new_bootstrap_value asks for
RENEW_AFTER = timedelta(seconds=30)
CREDENTIAL_LIFETIME_DAYS = 60


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    renew_before = BOOTSTRAP_LIFETIME - RENEW_AFTER
    hours, seconds = divmod(int(renew_before.total_seconds()), 3600)
    return {
        "APITOKEN_OPERATOR_CREDENTIAL_LIFETIME_DAYS": str(CREDENTIAL_LIFETIME_DAYS),
        "APITOKEN_OPERATOR_CREDENTIAL_RENEW_BEFORE": f"{hours}h{seconds}s",
    }


def ws(kube: Client, namespace: str) -> Any:
    return kube.get(TokenWorkspace, "main", namespace=namespace)


def credential_secret(kube: Client, workspace: Workspace) -> Secret:
    return kube.get(Secret, f"{workspace.name}-apitoken-credential", namespace=workspace.namespace)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_credential_is_renewed_before_it_expires_and_api_tokens_stay_ready(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    status = status_of(ws(kube, ns))
    bootstrap_id = status["credentialTokenId"]
    bootstrap = op.admin.token(bootstrap_id)
    assert bootstrap is not None and bootstrap["name"] == f"operator-{ns}", bootstrap
    assert bootstrap["status"] == "active"
    # Renewal is scheduled where the setting puts it, before the credential expires.
    renewal = parse(status["credentialRenewalTime"])
    assert renewal == parse(status["credentialExpiresAt"]) - (BOOTSTRAP_LIFETIME - RENEW_AFTER)
    assert renewal < parse(status["credentialExpiresAt"])
    before = secret_data(kube, ns, f"{op.workspace.name}-apitoken-credential")
    assert before is not None
    created = api_token(kube, ns)
    first_token = status_of(ready_token(kube, ns))["tokenId"]

    ready_seen: list[str | None] = []

    def renewed() -> str | None:
        ready_seen.append(condition(kube.get(ApiToken, "tok", namespace=ns), "Ready"))
        tid = status_of(ws(kube, ns)).get("credentialTokenId")
        return str(tid) if tid and tid != bootstrap_id else None

    new_id = eventually("the operator to renew its credential", renewed, timeout=60)
    assert set(ready_seen) == {"True"}, ready_seen  # Ready all along, polled 4 times a second
    # The credential Secret holds the new token, of the operator's own, for the set lifetime.
    secret = credential_secret(kube, op.workspace)
    assert secret.metadata is not None and secret.metadata.annotations is not None
    assert secret.metadata.annotations["apitoken.dev/token-id"] == new_id
    after = secret_data(kube, ns, f"{op.workspace.name}-apitoken-credential")
    assert after is not None and after["refresh_token"] != before["refresh_token"]
    assert op.admin.introspect(after["access_token"]).get("tid") == new_id
    renewed_token = op.admin.token(new_id)
    assert renewed_token is not None
    assert renewed_token["name"] == f"apitoken-operator/{ns}/{op.workspace.name}"
    assert renewed_token["externalRef"] == ws(kube, ns).metadata.uid
    assert renewed_token["status"] == "active"
    lifetime = parse(renewed_token["expiresAt"]) - parse(renewed_token["createdAt"])
    assert abs(lifetime - timedelta(days=CREDENTIAL_LIFETIME_DAYS)) < timedelta(minutes=1)
    # The old credential is disabled, and the next renewal is far away.
    eventually(
        "the old credential token to be disabled",
        lambda: (op.admin.token(bootstrap_id) or {}).get("status") == "disabled",
    )
    status = status_of(ws(kube, ns))
    assert parse(status["credentialRenewalTime"]) > datetime.now(UTC) + timedelta(days=29)
    assert condition(ws(kube, ns), "Ready") == "True"
    reasons = {e.reason for e in events_of(kube, ns)}
    assert "CredentialRenewed" in reasons, reasons

    # The ApiToken stayed Ready, and the new credential manages it: a re-issue goes through.
    assert condition(kube.get(ApiToken, "tok", namespace=ns), "Ready") == "True"
    merge_patch(kube, ns, {"metadata": {"annotations": {"apitoken.dev/reissue": "after-renewal"}}})

    def reissued() -> str | None:
        tid = status_of(kube.get(ApiToken, "tok", namespace=ns)).get("tokenId")
        return str(tid) if tid and tid != first_token else None

    eventually("a re-issue through the renewed credential", reissued)
    eventually(
        "the replaced token to be deleted",
        lambda: op.admin.token(first_token) is None,
    )
    ready_token(kube, ns)
    assert len(op.admin.tokens_of(created.metadata.uid)) == 1


def test_a_refused_credential_is_reported_as_unauthorized_until_a_new_bootstrap_value(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    api_token(kube, ns)
    ready_token(kube, ns)
    credential_id = status_of(ws(kube, ns))["credentialTokenId"]
    # A workspace admin disables the operator's token on the admin page.
    op.admin.disable(credential_id)

    def unauthorized() -> Any:
        obj = ws(kube, ns)
        return obj if reason(obj) == "Unauthorized" else None

    # Its access token works until it expires (seconds); the next refresh is refused.
    obj = eventually("Ready=False reason Unauthorized", unauthorized, timeout=30)
    assert condition(obj, "Ready") == "False"
    assert condition(obj, "Stalled") == "True"
    ready = next(c for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "refused the operator's credential" in ready["message"], ready
    assert "put a new bootstrap refresh token in Secret bootstrap" in ready["message"], ready
    # ApiTokens keep refreshing with their own tokens meanwhile; making new ones waits.
    assert condition(kube.get(ApiToken, "tok", namespace=ns), "Ready") == "True"
    waiting = api_token(kube, ns, name="waits")

    def waits() -> Any:
        obj = kube.get(ApiToken, "waits", namespace=ns)
        return obj if reason(obj, "Reconciling") == "WorkspaceNotReady" else None

    eventually("the new ApiToken to wait for the workspace", waits)
    assert op.admin.tokens_of(waiting.metadata.uid) == []

    # A new bootstrap value (a GitOps commit of a freshly made token) recovers the workspace.
    apply_bootstrap_secret(kube, ns, op.admin.new_bootstrap_value(f"operator-again-{ns}"))

    def recovered() -> Any:
        obj = ws(kube, ns)
        return obj if condition(obj, "Ready") == "True" else None

    status = status_of(eventually("the workspace to be Ready again", recovered, timeout=30))
    assert status["credentialTokenId"] != credential_id
    assert reason(ws(kube, ns)) == "WorkspaceReady"
    assert condition(ws(kube, ns), "Stalled") is None
    ready_token(kube, ns, "waits")
    assert len(op.admin.tokens_of(waiting.metadata.uid)) == 1
