"""The operator end to end: generate, refresh, re-issue, disable, delete, against the real
kube-apiserver, the real token service (access tokens living 6 s) and `apitoken-operator run`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken
from support.operator import (
    SEEN_VALUES,
    OperatorTest,
    access_token_schedule,
    api_token,
    condition,
    events_of,
    eventually,
    gone,
    merge_patch,
    new_token_id,
    next_refresh,
    ready_token,
    reason,
    requests,
    runs,
    secret_data,
    status_of,
    token_id,
)

pytestmark = pytest.mark.e2e


def test_generate_writes_the_secret_and_status(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    created = api_token(
        kube,
        ns,
        # A GitOps tool's tracking label on the ApiToken never reaches the Secret.
        labels={"app.kubernetes.io/instance": "argocd-app"},
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
    listed = op.admin.tokens_of(uid)
    assert [(t["id"], t["status"], t["name"]) for t in listed] == [
        (status["tokenId"], "active", f"{ns}/tok")
    ]
    assert op.admin.introspect(data["access_token"])["active"] is True
    assert status["secretName"] == "tok"
    assert status["observedGeneration"] == 1
    # The run's finalizer; Kopf, which serves only the workspaces, annotates no ApiToken.
    assert obj.metadata.finalizers == ["apitoken.dev/finalizer"]
    annotations = (obj.metadata.annotations if obj.metadata else None) or {}
    assert not [k for k in annotations if "last-handled" in k or "kopf" in k]


def test_refresh_rotates_both_tokens_and_keeps_them_working(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    api_token(kube, ns)
    first = status_of(ready_token(kube, ns))
    first_schedule = access_token_schedule(kube, ns)
    before = secret_data(kube, ns, "tok")
    assert before is not None
    seen = [before]
    # Access tokens live 6 s: two refreshes within the timeout, each rotating the refresh token.
    for _ in range(2):
        seen.append(next_refresh(kube, ns, after=seen[-1]))
    assert len({d["refresh_token"] for d in seen}) == 3
    assert len({d["expires_at"] for d in seen}) == 3
    obj = kube.get(ApiToken, "tok", namespace=ns)
    status = status_of(obj)
    assert status["tokenId"] == first["tokenId"]  # refreshed, not re-issued
    # The access token's times are on the Secret, written with it; the status keeps none.
    schedule = access_token_schedule(kube, ns)
    assert schedule["refreshedAt"] > first_schedule["refreshedAt"]
    assert schedule["refreshedAt"] < schedule["nextRefreshAt"] < schedule["expiresAt"]
    assert not {"lastRefreshTime", "nextRefreshTime", "accessTokenExpiresAt"} & set(status)
    assert condition(obj, "Ready") == "True"
    latest = secret_data(kube, ns, "tok")
    assert latest is not None
    assert op.admin.introspect(latest["access_token"])["active"] is True
    token = op.admin.token(status["tokenId"])
    assert token is not None and token["status"] == "active"


def test_lifetime_change_reissues_and_template_change_does_not(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    created = api_token(kube, ns, lifetimeDays=7)
    ready_token(kube, ns)
    old = token_id(kube, ns)
    merge_patch(kube, ns, {"spec": {"lifetimeDays": 8}})
    new = new_token_id(kube, ns, old)
    # The replaced token is deleted (deletionPolicy Delete) once the Secret switched.
    eventually("the old token to be deleted", lambda: op.admin.token(old) is None)
    listed = op.admin.tokens_of(created.metadata.uid)
    assert [t["id"] for t in listed] == [new]
    expires = datetime.fromisoformat(listed[0]["expiresAt"].replace("Z", "+00:00"))
    assert timedelta(days=7, hours=23) < expires - datetime.now(UTC) <= timedelta(days=8)
    assert "retiringTokens" not in status_of(kube.get(ApiToken, "tok", namespace=ns))

    merge_patch(kube, ns, {"spec": {"secretTemplate": {"labels": {"tier": "gold"}}}})

    def labelled() -> bool:
        secret = kube.get(Secret, "tok", namespace=ns)
        return bool(secret.metadata and (secret.metadata.labels or {}).get("tier") == "gold")

    eventually("the template label on the Secret", labelled)
    assert token_id(kube, ns) == new
    assert [t["id"] for t in op.admin.tokens_of(created.metadata.uid)] == [new]


def test_reissue_annotation_mints_a_new_token_once(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    created = api_token(kube, ns, deletionPolicy="Disable")
    ready_token(kube, ns)
    old = token_id(kube, ns)
    request = "2026-11-29T01:00:00Z"
    merge_patch(kube, ns, {"metadata": {"annotations": {"apitoken.dev/reissue": request}}})
    new = new_token_id(kube, ns, old)
    assert status_of(kube.get(ApiToken, "tok", namespace=ns))["lastReissueRequest"] == request
    # deletionPolicy Disable: the replaced token is disabled, not deleted.
    eventually(
        "the old token to be disabled",
        lambda: (op.admin.token(old) or {}).get("status") == "disabled",
    )
    statuses = {t["id"]: t["status"] for t in op.admin.tokens_of(created.metadata.uid)}
    assert statuses == {old: "disabled", new: "active"}
    # The annotation was noticed from its watch event, not at the next scheduled refresh.
    assert "re-issue requested" in op.operator.logs()


def test_disabled_disables_the_token_and_empties_the_secret(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    api_token(kube, ns)
    ready_token(kube, ns)
    tid = token_id(kube, ns)
    merge_patch(kube, ns, {"spec": {"disabled": True}})

    def disabled() -> Any:
        obj = kube.get(ApiToken, "tok", namespace=ns)
        return obj if reason(obj) == "Disabled" else None

    obj = eventually("Ready=False reason Disabled", disabled)
    assert condition(obj, "Ready") == "False"
    eventually(
        "the token to be disabled at the service",
        lambda: (op.admin.token(tid) or {}).get("status") == "disabled",
    )

    def emptied() -> dict[str, str] | None:
        data = secret_data(kube, ns, "tok")
        return data if data is not None and "refresh_token" not in data else None

    data = eventually("the Secret to hold no usable token", emptied)
    assert set(data) == {"token_type", "expires_at"}
    # No more refreshes: looked at again, the operator writes the Secret no more (a scheduled
    # run starts from the bodies it kept, so runs are counted by the operator's metric).
    secret_path = f"/api/v1/namespaces/{ns}/secrets/tok"
    before = runs(op.operator)
    writes = requests(op.operator, "PATCH", secret_path)
    eventually("another run", lambda: runs(op.operator) > before, timeout=20)
    assert requests(op.operator, "PATCH", secret_path) == writes
    assert secret_data(kube, ns, "tok") == data
    # Irreversible: the API server refuses turning it back on.
    with pytest.raises(ApiError) as refused:
        merge_patch(kube, ns, {"spec": {"disabled": False}})
    assert refused.value.status.code == 422


@pytest.mark.parametrize("policy", ["Delete", "Disable", "Orphan"])
def test_deletion_policy(kube: Client, op: OperatorTest, policy: str) -> None:
    ns = op.namespace
    spec: dict[str, Any] = {} if policy == "Delete" else {"deletionPolicy": policy}
    created = api_token(kube, ns, **spec)
    ready_token(kube, ns)
    tid = token_id(kube, ns)
    meta = kube.get(ApiToken, "tok", namespace=ns).metadata
    assert meta is not None and meta.finalizers == ["apitoken.dev/finalizer"]
    kube.delete(ApiToken, "tok", namespace=ns)

    eventually("the ApiToken to be released", lambda: gone(kube, ApiToken, "tok", ns))
    token = op.admin.token(tid)
    if policy == "Delete":
        assert token is None
        assert op.admin.tokens_of(created.metadata.uid) == []
    elif policy == "Disable":
        assert token is not None and token["status"] == "disabled"
    else:
        assert token is not None and token["status"] == "active"
        secret = kube.get(Secret, "tok", namespace=ns)
        assert secret.metadata is not None
        assert not secret.metadata.ownerReferences
        data = secret_data(kube, ns, "tok")
        assert data is not None and "refresh_token" in data


def test_a_token_disabled_outside_the_operator_is_reissued(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    api_token(kube, ns)
    ready_token(kube, ns)
    old = token_id(kube, ns)
    op.admin.disable(old)
    # The next refresh gets invalid_grant; the ApiToken still asks for a working token.
    new = new_token_id(kube, ns, old)
    assert (op.admin.token(new) or {}).get("status") == "active"

    def reissue_event() -> list[str]:
        return [
            e.message or ""
            for e in events_of(kube, ns)
            if e.reason == "Reissued" and "TokenRevoked" in (e.message or "")
        ]

    assert new in eventually("a Reissued event naming TokenRevoked", reissue_event)[0]


def test_events_and_metrics(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    api_token(kube, ns)
    ready_token(kube, ns)
    first = secret_data(kube, ns, "tok")
    assert first is not None
    next_refresh(kube, ns, after=first)

    def generated() -> list[Any]:
        return [e for e in events_of(kube, ns) if e.reason == "Generated"]

    event = eventually("a Generated event", generated)[0]
    assert event.type == "Normal"
    assert event.involvedObject.kind == "ApiToken" and event.involvedObject.name == "tok"
    # Routine refreshes post no events.
    reasons = {e.reason for e in events_of(kube, ns) if e.involvedObject.kind == "ApiToken"}
    assert reasons == {"Generated"}, reasons

    text = op.operator.metrics()
    labels = f'name="tok",namespace="{ns}"'
    for family in (
        "apitoken_access_token_expiry_timestamp_seconds",
        "apitoken_refresh_token_expiry_timestamp_seconds",
    ):
        assert any(line.startswith(f"{family}{{{labels}}} ") for line in text.splitlines()), family
    assert 'apitoken_refreshes_total{result="success"}' in text
    assert 'apitoken_service_request_duration_seconds_count{operation="create_token"' in text
    assert not [v for v in SEEN_VALUES if v in text]
    # Structured logs: one JSON object per line.
    lines = op.operator.logs().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
