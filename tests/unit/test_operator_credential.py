"""The operator's own workspace credential: bootstrap once, refresh, renew, report."""

import base64
import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from apitoken_operator.core.held_token import IssuedToken
from apitoken_operator.core.managed_secret import ObservedSecret, observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import (
    CredentialDecision,
    CredentialObservation,
    CredentialPolicy,
    WorkspaceObject,
    credential_failed_state,
    credential_secret_ref,
    credential_stored_state,
    decide_credential,
    token_claims,
)
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import TokenWorkspaceSpec, TokenWorkspaceStatus, WorkspaceKind
from apitoken_operator.providers.answers import TokenValues
from support.clock import T0
from support.decisions import Row, check, describe, rows
from support.held_tokens import WS_UID, workspace_object

pytestmark = pytest.mark.unit

POLICY = CredentialPolicy(timing=TimingPolicy(refresh_jitter_percent=0))
SPEC = TokenWorkspaceSpec.model_validate(
    {"url": "http://svc", "workspace": "w1", "credentialsSecretRef": {"name": "bootstrap"}}
)
D1 = salted_digest(WS_UID, "bootstrap-value-1")
D2 = salted_digest(WS_UID, "bootstrap-value-2")


def jwt(**claims: str) -> str:
    def part(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'EdDSA'})}.{part(claims)}.signature"


def workspace(spec: TokenWorkspaceSpec = SPEC, **status: Any) -> WorkspaceObject:
    return workspace_object(spec, TokenWorkspaceStatus(**status))


def stored(
    digest: str | None = D1, now: datetime = T0, refresh_left: timedelta = timedelta(days=90)
) -> CredentialObservation:
    """The state right after the bootstrap value was used, as the next run observes it."""
    obs = CredentialObservation(workspace=workspace(), secret=None, bootstrap_digest=digest)
    manifest, status = credential_stored_state(
        obs,
        IssuedToken(
            token_id="cred-1",
            values=TokenValues(
                access_token=jwt(sub="operator", tid="cred-1"),
                refresh_token="rotated-refresh-value",
                token_type="Bearer",
                access_token_expires_at=now + timedelta(hours=1),
            ),
            refresh_token_expires_at=now + refresh_left,
            obtained_at=now,
        ),
        POLICY,
        bootstrap_digest=D1,
    )
    ws = dataclasses.replace(obs.workspace, status=status)
    return CredentialObservation(workspace=ws, secret=observe(manifest), bootstrap_digest=digest)


def with_status(obs: CredentialObservation, **fields: Any) -> CredentialObservation:
    ws = dataclasses.replace(obs.workspace, status=obs.workspace.status.model_copy(update=fields))
    return dataclasses.replace(obs, workspace=ws)


def ready(decision: CredentialDecision) -> tuple[str, str]:
    c = decision.status.condition(reasons.READY)
    assert c is not None
    return c.status.value, c.reason


def stalled(decision: CredentialDecision) -> str | None:
    c = decision.status.condition(reasons.STALLED)
    return None if c is None else c.reason


OAUTH2 = TokenWorkspaceSpec.model_validate(
    {"provider": "oauth2", "oauth2": {"tokenEndpoint": "http://idp/token"}}
)

READY = ("True", reasons.WORKSPACE_READY)
IMPORTING = ("False", reasons.IMPORTING)
RENEW = [f"Issue:{reasons.RENEWAL_DUE}", "disable:cred-1"]
CASES: list[Row[CredentialObservation]] = [
    Row(
        "refresh-only-needs-nothing",
        lambda: CredentialObservation(workspace(OAUTH2), None, None),
        T0,
        [],
        READY,
    ),
    Row(
        "first-bootstrap",
        lambda: CredentialObservation(workspace(), None, D1),
        T0,
        ["Import"],
        IMPORTING,
    ),
    Row("steady", stored, T0 + timedelta(minutes=10), [], READY),
    Row(
        "bootstrap-deleted-after-use-is-fine",
        lambda: stored(digest=None),
        T0 + timedelta(minutes=10),
        [],
        READY,
    ),
    Row("refresh-due", stored, T0 + timedelta(minutes=45), ["Refresh:cred-1"], READY),
    Row(
        "renewal-due-with-expired-access-token-refreshes-first",
        stored,
        T0 + timedelta(days=60),
        ["Refresh:cred-1"],
        ("False", reasons.ACCESS_TOKEN_EXPIRED),
    ),
    Row(
        "renewal-due",
        lambda: stored(refresh_left=timedelta(days=20)),
        T0 + timedelta(minutes=10),
        RENEW,
        READY,
    ),
    Row(
        "new-bootstrap-replaces-and-retires-old",
        lambda: stored(digest=D2),
        T0 + timedelta(minutes=10),
        ["Import(retire=cred-1)"],
        IMPORTING,
    ),
    Row(
        "stale-bootstrap-with-lost-credential",
        lambda: dataclasses.replace(stored(), secret=None),
        T0,
        [],
        ("False", reasons.CREDENTIALS_MISSING),
        stalled=("True", reasons.CREDENTIALS_MISSING),
    ),
    Row(
        "nothing-at-all",
        lambda: CredentialObservation(workspace(), None, None),
        T0,
        [],
        ("False", reasons.CREDENTIALS_MISSING),
        stalled=("True", reasons.CREDENTIALS_MISSING),
    ),
    Row(
        "credential-rejected",
        lambda: with_status(
            stored(),
            failed_attempts=1,
            last_failure_time=T0,
            last_failure_reason=reasons.REFRESH_TOKEN_REJECTED,
            last_failure_message="invalid_grant",
        ),
        T0 + timedelta(minutes=50),
        [],
        ("False", reasons.UNAUTHORIZED),
        stalled=("True", reasons.UNAUTHORIZED),
    ),
    Row(
        "foreign-secret-is-a-conflict",
        lambda: dataclasses.replace(
            stored(), secret=ObservedSecret(name="main-apitoken-credential")
        ),
        T0,
        [],
        ("False", reasons.SECRET_CONFLICT),
        stalled=("True", reasons.SECRET_CONFLICT),
    ),
]


@rows(CASES)
def test_decide_credential(row: Row[CredentialObservation]) -> None:
    decision = decide_credential(row.situation(), row.now, POLICY)
    check(decision, row)
    assert decision.usable is (row.ready is not None and row.ready[0] == "True")


def test_stored_state_records_user_token_and_digest_but_no_value() -> None:
    obs = stored()
    status = obs.workspace.status
    assert (status.user, status.credential_token_id, status.bootstrap_digest) == (
        "operator",
        "cred-1",
        D1,
    )
    assert status.credential_secret_name == "main-apitoken-credential"
    assert "rotated-refresh-value" not in json.dumps(status.to_json())
    assert obs.secret is not None and obs.secret.owner_uids == (WS_UID,)


def test_steady_state_is_idempotent_and_requeues_at_refresh() -> None:
    decision = decide_credential(stored(), T0 + timedelta(minutes=10), POLICY)
    assert decision.requeue_at == T0 + timedelta(minutes=45)
    obs = stored()
    settled = dataclasses.replace(
        obs, workspace=dataclasses.replace(obs.workspace, status=decision.status)
    )
    again = decide_credential(settled, T0 + timedelta(minutes=20), POLICY)
    assert again.status == decision.status
    assert decision.status.credential_renewal_time == T0 + timedelta(days=60)


def test_backoff_holds_calls() -> None:
    obs = with_status(
        stored(),
        failed_attempts=2,
        last_failure_time=T0 + timedelta(minutes=45),
        last_failure_reason=reasons.SERVICE_UNREACHABLE,
    )
    decision = decide_credential(obs, T0 + timedelta(minutes=45, seconds=1), POLICY)
    assert decision.actions == ()
    c = decision.status.condition(reasons.RECONCILING)
    assert c is not None and c.reason == reasons.SERVICE_UNREACHABLE
    assert decision.usable


def test_rejected_bootstrap_is_not_retried() -> None:
    obs = CredentialObservation(workspace(), None, D1)
    status = credential_failed_state(
        obs, reasons.REFRESH_TOKEN_REJECTED, "invalid_grant", T0, consumed_bootstrap_digest=D1
    )
    after = dataclasses.replace(obs, workspace=dataclasses.replace(obs.workspace, status=status))
    decision = decide_credential(after, T0 + timedelta(hours=1), POLICY)
    assert decision.actions == ()
    assert stalled(decision) == reasons.CREDENTIALS_MISSING


@pytest.mark.parametrize(
    ("kind", "namespace", "expected"),
    [
        (WorkspaceKind.TOKEN_WORKSPACE, "apps", ("apps", "main-apitoken-credential")),
        (
            WorkspaceKind.CLUSTER_TOKEN_WORKSPACE,
            None,
            ("apitoken-operator", "ctokws-main-credential"),
        ),
    ],
    ids=["namespaced", "cluster"],
)
def test_credential_secret_ref(
    kind: WorkspaceKind, namespace: str | None, expected: tuple[str, str]
) -> None:
    ws = dataclasses.replace(workspace(), kind=kind, namespace=namespace)
    assert credential_secret_ref(ws, POLICY) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt(sub="alice", tid="t1"), ("alice", "t1")),
        (jwt(sub="alice"), ("alice", None)),
        ("opaque-token", (None, None)),
        ("a.!!!.c", (None, None)),
    ],
    ids=["jwt", "no-tid", "opaque", "garbage"],
)
def test_token_claims(token: str, expected: tuple[str | None, str | None]) -> None:
    assert token_claims(token) == expected


@pytest.mark.parametrize(
    ("renew_before", "refresh_left", "expected"),
    [
        (None, timedelta(days=31), []),  # default: a third of the 90-day lifetime
        (None, timedelta(days=29), RENEW),
        (timedelta(days=1), timedelta(days=29), []),
        (timedelta(days=89, hours=23), timedelta(days=90), []),
        (timedelta(days=89, hours=23, minutes=55), timedelta(days=90), RENEW),
    ],
    ids=[
        "default-not-yet",
        "default-due",
        "one-day-not-yet",
        "almost-the-lifetime-not-yet",
        "almost-the-lifetime-due",
    ],
)
def test_renew_before_setting_moves_the_renewal(
    renew_before: timedelta | None, refresh_left: timedelta, expected: list[str]
) -> None:
    policy = POLICY.model_copy(update={"renew_before": renew_before})
    decision = decide_credential(
        stored(refresh_left=refresh_left), T0 + timedelta(minutes=10), policy
    )
    assert describe(decision.actions) == expected
