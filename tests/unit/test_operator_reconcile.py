"""The reconcile core: named table cases over (spec, status, Secret, workspace, service, now)."""

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from apitoken_operator.core.apitoken.decide import (
    ApiTokenView,
    Decision,
    Observation,
    Revoke,
    WorkspaceView,
    decide,
    failed_state,
    issued_state,
    refreshed_state,
    retired_state,
)
from apitoken_operator.core.held_token import (
    IssuedToken,
    RetireMode,
    RetireToken,
    ServiceToken,
    WriteSecret,
)
from apitoken_operator.core.managed_secret import ObservedSecret, observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    ClusterTokenWorkspaceSpec,
    ConditionStatus,
    TokenWorkspaceSpec,
    WorkspaceKind,
    status_patch,
)
from apitoken_operator.providers.answers import TokenValues
from support.clock import T0
from support.decisions import Row, check, condition, describe, rows

pytestmark = pytest.mark.unit

UID = "uid-1"
POLICY = TimingPolicy(refresh_jitter_percent=0)
HOUR = timedelta(hours=1)
APITOKEN_WS = TokenWorkspaceSpec.model_validate(
    {"url": "http://svc", "workspace": "w1", "credentialsSecretRef": {"name": "cred"}}
)
OAUTH2_WS = TokenWorkspaceSpec.model_validate(
    {"provider": "oauth2", "oauth2": {"tokenEndpoint": "http://idp/token", "clientId": "c"}}
)


def values(n: int, obtained: datetime, life: timedelta = HOUR) -> TokenValues:
    return TokenValues(
        access_token=f"access-value-{n}",
        refresh_token=f"refresh-value-{n}",
        token_type="Bearer",
        access_token_expires_at=obtained + life,
    )


def view(
    spec: dict[str, Any] | None = None,
    status: ApiTokenStatus | None = None,
    annotations: dict[str, str] | None = None,
    *,
    generation: int = 1,
    deleting: bool = False,
) -> ApiTokenView:
    return ApiTokenView(
        namespace="apps",
        name="billing",
        uid=UID,
        generation=generation,
        spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "main"}, **(spec or {})}),
        status=status or ApiTokenStatus(),
        annotations=annotations or {},
        deleting=deleting,
    )


def workspace(spec: TokenWorkspaceSpec | None = APITOKEN_WS, **kw: Any) -> WorkspaceView:
    kind = (
        WorkspaceKind.CLUSTER_TOKEN_WORKSPACE
        if isinstance(spec, ClusterTokenWorkspaceSpec)
        else WorkspaceKind.TOKEN_WORKSPACE
    )
    return WorkspaceView(kind=kind, name="main", spec=spec, **kw)


def fresh(**kw: Any) -> Observation:
    return Observation(token=view(**kw), secret=None, workspace=workspace())


@dataclass(frozen=True)
class World:
    """An observation plus what the I/O layer would see after running the actions."""

    obs: Observation

    def with_token(self, **changes: Any) -> "World":
        return World(
            dataclasses.replace(self.obs, token=dataclasses.replace(self.obs.token, **changes))
        )

    def with_spec(self, **fields: Any) -> "World":
        spec = self.obs.token.spec.model_copy(update=fields)
        return self.with_token(spec=spec)

    def with_status(self, **fields: Any) -> "World":
        return self.with_token(status=self.obs.token.status.model_copy(update=fields))

    def with_secret(self, secret: ObservedSecret | None) -> "World":
        return World(dataclasses.replace(self.obs, secret=secret))

    def with_obs(self, **changes: Any) -> "World":
        return World(dataclasses.replace(self.obs, **changes))


def issue(obs: Observation, token_id: str, now: datetime, n: int = 1) -> World:
    """The world right after a token was issued and the status of the next decide written."""
    manifest, status = issued_state(
        obs,
        IssuedToken(
            token_id=token_id,
            values=values(n, now),
            refresh_token_expires_at=now + timedelta(days=90),
            obtained_at=now,
        ),
        POLICY,
    )
    after = dataclasses.replace(
        obs, secret=observe(manifest), token=dataclasses.replace(obs.token, status=status)
    )
    settled = decide(after, now, POLICY)
    return World(
        dataclasses.replace(after, token=dataclasses.replace(after.token, status=settled.status))
    )


STEADY = issue(fresh(), "tok-1", T0)


def refreshed_at(world: World, when: datetime) -> World:
    manifest, status = refreshed_state(world.obs, values(7, when), when, POLICY)
    return world.with_secret(observe(manifest)).with_token(status=status)


def cond(decision: Decision, type_: str) -> tuple[str, str] | None:
    return condition(decision.status, type_)


def edited(secret: ObservedSecret | None, **data: str) -> ObservedSecret:
    assert secret is not None
    return dataclasses.replace(secret, data={**secret.data, **data})


REFRESH_AT = T0 + timedelta(minutes=45)
CASES: list[Row[World]] = [
    Row(
        "new-token-is-generated",
        lambda: World(fresh()),
        T0,
        [f"Issue:{reasons.GENERATING}"],
        ready=("False", reasons.GENERATING),
        reconciling=("True", reasons.GENERATING),
    ),
    Row(
        "steady-state-does-nothing",
        lambda: STEADY,
        T0 + timedelta(minutes=10),
        [],
        ready=("True", reasons.TOKEN_READY),
    ),
    Row(
        "refresh-at-75-percent",
        lambda: STEADY,
        REFRESH_AT,
        ["Refresh:tok-1"],
        ready=("True", reasons.TOKEN_READY),
        reconciling=("True", reasons.REFRESHING),
    ),
    Row(
        "renewal-due-reissues-and-deletes-old",
        lambda: STEADY,
        T0 + timedelta(days=60),
        [f"Issue:{reasons.RENEWAL_DUE}"],
        reconciling=("True", reasons.REISSUING),
    ),
    Row(
        "renewal-with-disable-policy-disables-old",
        lambda: STEADY.with_spec(deletion_policy="Disable"),
        T0 + timedelta(days=61),
        [f"Issue:{reasons.RENEWAL_DUE}"],
    ),
    Row(
        "renewal-with-orphan-policy-still-disables-old",
        lambda: STEADY.with_spec(deletion_policy="Orphan"),
        T0 + timedelta(days=61),
        [f"Issue:{reasons.RENEWAL_DUE}"],
    ),
    Row(
        "custom-renew-before",
        lambda: STEADY.with_spec(renew_before="24h"),
        T0 + timedelta(days=60),
        ["Refresh:tok-1"],
    ),
    Row(
        "lifetime-change-reissues",
        lambda: STEADY.with_spec(lifetime_days=30),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.LIFETIME_CHANGED}"],
    ),
    Row(
        "token-name-change-reissues",
        lambda: STEADY.with_spec(token_name="billing-prod"),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.TOKEN_NAME_CHANGED}"],
    ),
    Row(
        "workspace-change-reissues",
        lambda: STEADY.with_token(
            spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "other"}})
        ),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.WORKSPACE_CHANGED}"],
    ),
    Row(
        "template-change-only-updates-secret",
        lambda: STEADY.with_token(
            spec=ApiTokenSpec.model_validate(
                {"workspaceRef": {"name": "main"}, "secretTemplate": {"labels": {"team": "x"}}}
            )
        ),
        T0 + timedelta(minutes=1),
        ["WriteSecret:metadata drifted"],
        ready=("True", reasons.TOKEN_READY),
        reconciling=("True", reasons.UPDATING_SECRET),
    ),
    Row(
        "refresh-percent-change-does-not-reissue",
        lambda: STEADY.with_spec(refresh_percent=50),
        T0 + timedelta(minutes=31),
        ["Refresh:tok-1"],
    ),
    Row(
        "deletion-policy-orphan-removes-owner-reference-only",
        lambda: STEADY.with_spec(deletion_policy="Orphan"),
        T0 + timedelta(minutes=1),
        ["WriteSecret:metadata drifted"],
    ),
    Row(
        "reissue-annotation-reissues",
        lambda: STEADY.with_token(annotations={names.ANNOTATION_REISSUE: "2026-11-28"}),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.REISSUE_REQUESTED}"],
    ),
    Row(
        "handled-reissue-annotation-is-ignored",
        lambda: STEADY.with_token(annotations={names.ANNOTATION_REISSUE: "x"}).with_status(
            last_reissue_request="x"
        ),
        T0 + timedelta(minutes=1),
        [],
    ),
    Row(
        "deleted-secret-reissues-and-retires-old",
        lambda: STEADY.with_secret(None),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.SECRET_DELETED}"],
        ready=("False", reasons.GENERATING),
    ),
    Row(
        "edited-secret-reissues",
        lambda: STEADY.with_secret(edited(STEADY.obs.secret, refresh_token="by-hand")),
        T0 + timedelta(minutes=1),
        [f"Issue:{reasons.SECRET_MODIFIED}"],
    ),
    Row(
        "unmanaged-secret-is-a-conflict",
        lambda: STEADY.with_secret(ObservedSecret(name="billing", data={"x": "y"})),
        T0,
        [],
        ready=("False", reasons.SECRET_CONFLICT),
        stalled=("True", reasons.SECRET_CONFLICT),
    ),
    Row(
        "secret-of-another-apitoken-is-a-conflict",
        lambda: STEADY.with_secret(
            dataclasses.replace(STEADY.obs.secret or ObservedSecret(""), owner_uids=("uid-2",))
        ),
        T0,
        [],
        stalled=("True", reasons.SECRET_CONFLICT),
    ),
    Row(
        "missing-workspace-stalls",
        lambda: World(fresh()).with_obs(workspace=workspace(None)),
        T0,
        [],
        ready=("False", reasons.WORKSPACE_NOT_FOUND),
        stalled=("True", reasons.WORKSPACE_NOT_FOUND),
    ),
    Row(
        "namespace-not-allowed-generates-nothing",
        lambda: World(fresh()).with_obs(
            workspace=workspace(
                ClusterTokenWorkspaceSpec.model_validate(
                    {**APITOKEN_WS.to_json(), "allowedNamespaces": {"names": ["other"]}}
                )
            )
        ),
        T0,
        [],
        ready=("False", reasons.NOT_ALLOWED),
        stalled=("True", reasons.NOT_ALLOWED),
    ),
    Row(
        "allowed-namespace-by-selector-generates",
        lambda: World(fresh()).with_obs(
            workspace=workspace(
                ClusterTokenWorkspaceSpec.model_validate(
                    {
                        **APITOKEN_WS.to_json(),
                        "allowedNamespaces": {"selector": {"matchLabels": {"team": "a"}}},
                    }
                ),
                namespace_labels={"team": "a"},
            )
        ),
        T0,
        [f"Issue:{reasons.GENERATING}"],
    ),
    Row(
        "workspace-not-ready-holds-generation",
        lambda: World(fresh()).with_obs(workspace=workspace(ready=False, message="401")),
        T0,
        [],
        reconciling=("True", reasons.WORKSPACE_NOT_READY),
    ),
    Row(
        "workspace-not-ready-still-refreshes",
        lambda: STEADY.with_obs(workspace=workspace(ready=False)),
        REFRESH_AT,
        ["Refresh:tok-1"],
    ),
    Row(
        "renewal-waiting-for-workspace-still-refreshes",
        lambda: STEADY.with_obs(workspace=workspace(ready=False)),
        T0 + timedelta(days=61),
        ["Refresh:tok-1"],
        reconciling=("True", reasons.WORKSPACE_NOT_READY),
    ),
    Row(
        "renewal-waiting-for-workspace",
        lambda: refreshed_at(STEADY, T0 + timedelta(days=61)).with_obs(
            workspace=workspace(ready=False)
        ),
        T0 + timedelta(days=61, minutes=1),
        [],
        reconciling=("True", reasons.WORKSPACE_NOT_READY),
    ),
    Row(
        "invalid-grant-reissues",
        lambda: STEADY.with_status(
            failed_refresh_attempts=1,
            last_failure_time=T0,
            last_failure_reason=reasons.REFRESH_TOKEN_REJECTED,
        ),
        T0 + timedelta(minutes=5),
        [f"Issue:{reasons.TOKEN_REVOKED}"],
    ),
    Row(
        "backoff-holds-refresh-while-token-valid",
        lambda: STEADY.with_status(
            failed_refresh_attempts=3,
            last_failure_time=REFRESH_AT,
            last_failure_reason=reasons.SERVICE_UNREACHABLE,
            last_failure_message="connection refused",
        ),
        REFRESH_AT + timedelta(seconds=5),
        [],
        ready=("True", reasons.TOKEN_READY),
        reconciling=("True", reasons.SERVICE_UNREACHABLE),
    ),
    Row(
        "backoff-over-retries",
        lambda: STEADY.with_status(
            failed_refresh_attempts=1,
            last_failure_time=REFRESH_AT,
            last_failure_reason=reasons.SERVICE_UNREACHABLE,
        ),
        REFRESH_AT + timedelta(seconds=6),
        ["Refresh:tok-1"],
    ),
    Row(
        "ready-false-once-access-token-expired",
        lambda: STEADY.with_status(
            failed_refresh_attempts=8,
            last_failure_time=T0 + timedelta(minutes=59),
            last_failure_reason=reasons.SERVICE_ERROR,
            last_failure_message="502 Bad Gateway",
        ),
        T0 + timedelta(minutes=61),
        [],
        ready=("False", reasons.SERVICE_ERROR),
        reconciling=("True", reasons.SERVICE_ERROR),
    ),
    Row(
        "sweep-retires-unused-tokens-never-the-current",
        lambda: STEADY.with_obs(
            service_tokens=(
                ServiceToken("tok-1", "active", UID),
                ServiceToken("tok-0", "active", UID),
                ServiceToken("tok-old", "disabled", UID),
            )
        ),
        T0 + timedelta(minutes=1),
        ["delete:tok-0", "delete:tok-old"],
    ),
    Row(
        "sweep-with-disable-policy-skips-disabled",
        lambda: STEADY.with_spec(deletion_policy="Disable").with_obs(
            service_tokens=(
                ServiceToken("tok-1", "active", UID),
                ServiceToken("tok-0", "active", UID),
                ServiceToken("tok-old", "disabled", UID),
            )
        ),
        T0 + timedelta(minutes=1),
        ["disable:tok-0"],
    ),
    Row(
        "crash-before-secret-write-is-swept-and-regenerated",
        lambda: World(fresh()).with_obs(service_tokens=(ServiceToken("tok-leak", "active", UID),)),
        T0,
        [f"Issue:{reasons.GENERATING}", "delete:tok-leak"],
    ),
    Row(
        # The Secret carries the access token's schedule: a lost status costs no refresh.
        "lost-status-adopts-secret-and-its-schedule",
        lambda: STEADY.with_token(status=ApiTokenStatus()),
        T0 + timedelta(minutes=1),
        [],
        ready=("True", reasons.TOKEN_READY),
    ),
    Row(
        "crash-between-secret-and-status-adopts-secret",
        lambda: STEADY.with_status(token_id="tok-0", issued_spec_hash="stale.stale.1"),
        T0 + timedelta(minutes=1),
        ["delete:tok-0"],
    ),
    Row(
        "disable-disables-then-strips-secret",
        lambda: STEADY.with_spec(disabled=True),
        T0 + timedelta(minutes=1),
        ["disable:tok-1", f"WriteSecret:{reasons.DISABLED}"],
        ready=("False", reasons.DISABLED),
        reconciling=("True", reasons.DISABLING),
    ),
    Row(
        "disable-before-any-token-does-nothing",
        lambda: World(fresh(spec={"disabled": True})),
        T0,
        [],
        ready=("False", reasons.DISABLED),
    ),
    Row(
        "disabled-with-deleted-secret-disables-again",
        lambda: STEADY.with_spec(disabled=True).with_secret(None),
        T0,
        ["disable:tok-1"],
    ),
    Row(
        "import-ref-with-apitoken-provider-is-invalid",
        lambda: World(fresh(spec={"refreshTokenSecretRef": {"name": "hand-made"}})),
        T0,
        [],
        stalled=("True", reasons.INVALID_SPEC),
    ),
]


@rows(CASES)
def test_decide(row: Row[World]) -> None:
    check(decide(row.situation().obs, row.now, POLICY), row)


def test_steady_state_requeues_at_the_refresh_time() -> None:
    decision = decide(STEADY.obs, T0 + timedelta(minutes=10), POLICY)
    assert decision.requeue_at == REFRESH_AT
    assert STEADY.obs.secret is not None and STEADY.obs.secret.next_refresh_at == REFRESH_AT
    assert decision.status.renewal_time == T0 + timedelta(days=60)
    assert decision.requeue_at - (T0 + timedelta(minutes=10)) == timedelta(minutes=35)


def test_decide_is_idempotent_and_status_does_not_change_without_news() -> None:
    first = decide(STEADY.obs, T0 + timedelta(minutes=5), POLICY)
    assert first.status == STEADY.obs.token.status
    again = decide(STEADY.with_status().obs, T0 + timedelta(minutes=20), POLICY)
    assert again.status == first.status


def test_new_generation_updates_observed_generation_everywhere() -> None:
    decision = decide(STEADY.with_token(generation=4).obs, T0 + timedelta(minutes=5), POLICY)
    assert decision.status.observed_generation == 4
    assert {c.observed_generation for c in decision.status.conditions} == {4}


def test_backoff_requeues_at_the_retry_time() -> None:
    world = STEADY.with_status(
        failed_refresh_attempts=2,
        last_failure_time=REFRESH_AT,
        last_failure_reason=reasons.SERVICE_UNREACHABLE,
    )
    decision = decide(world.obs, REFRESH_AT + timedelta(seconds=1), POLICY)
    assert decision.actions == ()
    assert decision.requeue_at is not None
    assert (
        REFRESH_AT + timedelta(seconds=5)
        <= decision.requeue_at
        < REFRESH_AT + timedelta(seconds=10)
    )


def test_refresh_keeps_token_id_and_refresh_expiry_and_resets_failures() -> None:
    world = STEADY.with_status(
        failed_refresh_attempts=2, last_failure_time=T0, last_failure_reason=reasons.SERVICE_ERROR
    )
    manifest, status = refreshed_state(world.obs, values(2, REFRESH_AT), REFRESH_AT, POLICY)
    secret = observe(manifest)
    assert secret.token_id == "tok-1"
    assert secret.data["refresh_token"] == "refresh-value-2"
    assert secret.refresh_token_expires_at == T0 + timedelta(days=90)
    assert status.failed_refresh_attempts == 0 and status.last_failure_reason is None
    assert secret.access_token_expires_at == REFRESH_AT + HOUR
    # The access token's schedule is on the Secret, written by the same apply.
    assert secret.refreshed_at == REFRESH_AT
    assert secret.next_refresh_at == REFRESH_AT + timedelta(minutes=45)
    after = World(
        dataclasses.replace(
            world.obs, secret=secret, token=dataclasses.replace(world.obs.token, status=status)
        )
    )
    decision = decide(after.obs, REFRESH_AT, POLICY)
    assert decision.actions == ()
    assert decision.requeue_at == REFRESH_AT + timedelta(minutes=45)


def test_a_routine_refresh_changes_no_reported_field() -> None:
    """Item 6 of issue 11: one Secret write per refresh and no status write."""
    manifest, status = refreshed_state(STEADY.obs, values(2, REFRESH_AT), REFRESH_AT, POLICY)
    after = STEADY.with_secret(observe(manifest)).with_token(status=status)
    final = decide(after.obs, REFRESH_AT, POLICY).status
    assert status_patch(STEADY.obs.token.status, final) == {}


def test_a_secret_without_its_schedule_is_refreshed_and_a_missing_plan_is_written_back() -> None:
    secret = STEADY.obs.secret
    assert secret is not None
    no_plan = {k: v for k, v in secret.annotations.items() if k != names.ANNOTATION_NEXT_REFRESH_AT}
    decision = decide(
        STEADY.with_secret(dataclasses.replace(secret, annotations=no_plan)).obs,
        T0 + timedelta(minutes=10),
        POLICY,
    )
    (write,) = [a for a in decision.actions if isinstance(a, WriteSecret)]
    assert observe(write.manifest).next_refresh_at == REFRESH_AT
    # Without the time it was obtained, the access token's age is unknown: refreshed now.
    unknown = {k: v for k, v in secret.annotations.items() if k != names.ANNOTATION_REFRESHED_AT}
    decision = decide(
        STEADY.with_secret(dataclasses.replace(secret, annotations=unknown)).obs,
        T0 + timedelta(minutes=10),
        POLICY,
    )
    assert describe(decision.actions) == ["Refresh:tok-1"]


def test_reissue_records_the_handled_annotation_and_spec() -> None:
    world = STEADY.with_token(annotations={names.ANNOTATION_REISSUE: "now"}).with_spec(
        lifetime_days=30
    )
    after = issue(world.obs, "tok-2", T0 + HOUR, n=2)
    status = after.obs.token.status
    assert status.last_reissue_request == "now"
    assert status.token_id == "tok-2"
    # The replaced token is retired after the switch, and kept in the status until it is.
    assert [r.id for r in status.retiring_tokens] == ["tok-1"]
    decision = decide(after.obs, T0 + HOUR + timedelta(minutes=1), POLICY)
    assert describe(decision.actions) == ["delete:tok-1"]
    done = after.with_status(retiring_tokens=retired_state(after.obs, "tok-1").retiring_tokens)
    assert decide(done.obs, T0 + HOUR + timedelta(minutes=1), POLICY).actions == ()


def test_token_left_in_the_previous_workspace_is_retired_there() -> None:
    moved = STEADY.with_token(spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "other"}}))
    first = decide(moved.obs, T0 + timedelta(minutes=1), POLICY)
    assert describe(first.actions) == [f"Issue:{reasons.WORKSPACE_CHANGED}"]
    after = issue(moved.obs, "tok-9", T0 + timedelta(minutes=1), n=9)
    status = after.obs.token.status
    assert status.token_workspace == "TokenWorkspace/other"
    decision = decide(after.obs, T0 + timedelta(minutes=2), POLICY)
    (retire,) = decision.actions
    assert isinstance(retire, RetireToken)
    assert (retire.token_id, retire.workspace) == ("tok-1", "TokenWorkspace/main")


def test_failure_counts_attempts_and_keeps_the_token() -> None:
    status = failed_state(STEADY.obs, reasons.SERVICE_UNREACHABLE, "timed out", REFRESH_AT)
    assert status.failed_refresh_attempts == 1
    assert status.last_failure_time == REFRESH_AT
    assert status.token_id == "tok-1"


def test_disabled_secret_is_final() -> None:
    world = STEADY.with_spec(disabled=True)
    decision = decide(world.obs, T0, POLICY)
    (write,) = [a for a in decision.actions if isinstance(a, WriteSecret)]
    stripped = observe(write.manifest)
    assert set(stripped.data) == {"token_type", "expires_at"}
    done = decide(world.with_secret(stripped).obs, T0 + timedelta(minutes=1), POLICY)
    assert done.actions == ()
    assert cond(done, reasons.READY) == ("False", reasons.DISABLED)
    assert done.requeue_at is None
    assert stripped.refreshed_at is None and stripped.next_refresh_at is None


# Deletion ------------------------------------------------------------------------------------


def deleting(
    policy: str,
    annotations: dict[str, str] | None = None,
    ws: WorkspaceView | None = None,
    service_tokens: tuple[ServiceToken, ...] | None = (),
) -> World:
    return (
        STEADY.with_spec(deletion_policy=policy)
        .with_token(deleting=True, annotations=annotations or {})
        .with_obs(workspace=ws or workspace(), service_tokens=service_tokens)
    )


DELETED_AT = T0 + timedelta(minutes=1)
DELETION: list[Row[World]] = [
    Row(
        "delete",
        lambda: deleting("Delete"),
        DELETED_AT,
        ["delete:tok-1", "RemoveFinalizer"],
        reconciling=("True", reasons.CLEANING_UP),
    ),
    Row(
        "disable",
        lambda: deleting("Disable"),
        DELETED_AT,
        ["disable:tok-1", "RemoveFinalizer"],
        reconciling=("True", reasons.CLEANING_UP),
    ),
    Row(
        "orphan-drops-owner-reference",
        lambda: deleting("Orphan"),
        DELETED_AT,
        ["WriteSecret:orphaned", "RemoveFinalizer"],
        reconciling=("True", reasons.UPDATING_SECRET),
    ),
    Row(
        # The service's list failed: a token only it knows of (a crash lost the answer that
        # created it) would stay active, so the finalizer stays until the list is read.
        "unlisted-retires-the-known-and-waits",
        lambda: deleting("Delete", service_tokens=None),
        DELETED_AT,
        ["delete:tok-1"],
        reconciling=("True", reasons.CLEANUP_PENDING),
    ),
    Row(
        "orphan-unlisted-waits",
        lambda: deleting("Orphan", service_tokens=None),
        DELETED_AT,
        ["WriteSecret:orphaned"],
        reconciling=("True", reasons.CLEANUP_PENDING),
    ),
    Row(
        "abandon-annotation-releases",
        lambda: deleting("Delete", {names.ANNOTATION_ABANDON: "true"}),
        DELETED_AT,
        ["RemoveFinalizer"],
        reconciling=None,
    ),
    Row(
        "workspace-gone-waits",
        lambda: deleting("Delete", ws=workspace(None)),
        DELETED_AT,
        [],
        reconciling=("True", reasons.CLEANUP_PENDING),
    ),
    Row(
        "workspace-not-ready-waits",
        lambda: deleting("Delete", ws=workspace(ready=False)),
        DELETED_AT,
        [],
        reconciling=("True", reasons.WORKSPACE_NOT_READY),
    ),
    Row(
        "refresh-only-revokes-the-refresh-token",
        lambda: deleting("Delete", ws=workspace(OAUTH2_WS)),
        DELETED_AT,
        ["Revoke", "RemoveFinalizer"],
        reconciling=("True", reasons.DISABLING),
    ),
]


@rows(DELETION)
def test_deletion(row: Row[World]) -> None:
    check(decide(row.situation().obs, row.now, POLICY), row)


def test_orphaned_secret_keeps_its_data_and_loses_the_owner() -> None:
    world = STEADY.with_spec(deletion_policy="Orphan").with_token(deleting=True)
    decision = decide(world.obs, T0, POLICY)
    write = decision.actions[0]
    assert isinstance(write, WriteSecret)
    secret = observe(write.manifest)
    assert secret.owner_uids == ()
    assert STEADY.obs.secret is not None and secret.data == STEADY.obs.secret.data


def test_deletion_sweeps_every_tagged_token_and_waits_out_backoff() -> None:
    world = STEADY.with_token(deleting=True).with_obs(
        service_tokens=(
            ServiceToken("tok-1", "active", UID),
            ServiceToken("tok-x", "disabled", UID),
        )
    )
    decision = decide(world.obs, T0, POLICY)
    assert describe(decision.actions) == ["delete:tok-1", "delete:tok-x", "RemoveFinalizer"]
    failing = world.with_status(
        failed_refresh_attempts=1,
        last_failure_time=T0,
        last_failure_reason=reasons.SERVICE_UNREACHABLE,
    )
    held = decide(failing.obs, T0 + timedelta(seconds=1), POLICY)
    assert held.actions == ()
    assert cond(held, reasons.RECONCILING) == ("True", reasons.SERVICE_UNREACHABLE)
    assert held.requeue_at is not None


# Refresh-only mode ---------------------------------------------------------------------------

IMPORT_SPEC = {"refreshTokenSecretRef": {"name": "hand-made"}}
DIGEST = salted_digest(UID, "hand-made-refresh-value")


def refresh_only(**obs: Any) -> World:
    return World(
        Observation(
            token=view(spec=IMPORT_SPEC), secret=None, workspace=workspace(OAUTH2_WS), **obs
        )
    )


def imported() -> World:
    world = refresh_only(import_digest=DIGEST)
    manifest, status = issued_state(
        world.obs,
        IssuedToken(
            token_id="import-1",
            values=values(1, T0),
            refresh_token_expires_at=None,
            obtained_at=T0,
            imported_digest=DIGEST,
        ),
        POLICY,
    )
    return world.with_secret(observe(manifest)).with_token(status=status)


REFRESH_ONLY: list[Row[World]] = [
    Row("first-import", lambda: refresh_only(import_digest=DIGEST), T0, ["Import"]),
    Row(
        "import-secret-missing",
        lambda: refresh_only(),
        T0,
        [],
        stalled=("True", reasons.IMPORT_SECRET_MISSING),
    ),
    Row(
        "no-import-ref",
        lambda: World(Observation(token=view(), secret=None, workspace=workspace(OAUTH2_WS))),
        T0,
        [],
        stalled=("True", reasons.IMPORT_REQUIRED),
    ),
    Row("steady", lambda: imported(), T0 + timedelta(minutes=5), []),
    Row("refresh", lambda: imported(), REFRESH_AT, ["Refresh:import-1"]),
    Row(
        "secret-deleted-after-import-needs-new-import",
        lambda: imported().with_secret(None),
        T0,
        [],
        stalled=("True", reasons.IMPORT_REQUIRED),
    ),
    Row(
        "new-value-is-imported",
        lambda: imported().with_obs(import_digest=salted_digest(UID, "newer-value")),
        T0,
        ["Import"],
    ),
    Row(
        "rejected-token-stalls",
        lambda: imported().with_status(
            failed_refresh_attempts=1,
            last_failure_time=T0,
            last_failure_reason=reasons.REFRESH_TOKEN_REJECTED,
        ),
        T0 + HOUR,
        [],
        stalled=("True", reasons.REFRESH_TOKEN_REJECTED),
    ),
]


@rows(REFRESH_ONLY)
def test_refresh_only(row: Row[World]) -> None:
    check(decide(row.situation().obs, row.now, POLICY), row)


def test_rejected_import_is_not_retried() -> None:
    world = refresh_only(import_digest=DIGEST)
    status = failed_state(
        world.obs,
        reasons.REFRESH_TOKEN_REJECTED,
        "invalid_grant",
        T0,
        consumed_import_digest=DIGEST,
    )
    decision = decide(world.with_token(status=status).obs, T0 + HOUR, POLICY)
    assert decision.actions == ()
    assert cond(decision, reasons.STALLED) == ("True", reasons.IMPORT_REQUIRED)


# Secrets never reach the status --------------------------------------------------------------


def test_no_token_value_in_any_status_through_a_lifecycle() -> None:
    statuses = [STEADY.obs.token.status]
    world = STEADY
    now = T0
    for n in range(2, 6):
        now = now + timedelta(minutes=45)
        decision = decide(world.obs, now, POLICY)
        assert describe(decision.actions) == ["Refresh:tok-1"]
        manifest, status = refreshed_state(world.obs, values(n, now), now, POLICY)
        world = world.with_secret(observe(manifest)).with_token(status=status)
        world = world.with_token(status=decide(world.obs, now, POLICY).status)
        statuses.append(world.obs.token.status)
    world = world.with_token(annotations={names.ANNOTATION_REISSUE: "go"})
    statuses.append(issue(world.obs, "tok-2", now, n=9).obs.token.status)
    dumped = " ".join(str(s.to_json()) for s in statuses)
    assert "tok-2" in dumped  # the dump is real
    assert "access-value" not in dumped and "refresh-value" not in dumped


def test_condition_statuses_are_kstatus_values() -> None:
    decision = decide(STEADY.obs, T0, POLICY)
    assert all(isinstance(c.status, ConditionStatus) for c in decision.status.conditions)
    assert decision.status.to_json()["conditions"][0]["status"] == "True"


def test_retire_modes() -> None:
    assert {m.value for m in RetireMode} == {"disable", "delete"}


def test_recorded_times_are_whole_seconds_even_with_jitter() -> None:
    manifest, _ = refreshed_state(
        STEADY.obs, values(2, T0 + timedelta(microseconds=123)), T0, TimingPolicy()
    )
    secret = observe(manifest)
    decision = decide(STEADY.obs, T0 + timedelta(minutes=1), TimingPolicy())
    times = [secret.refreshed_at, secret.next_refresh_at, decision.status.renewal_time]
    assert all(t is not None and t.microsecond == 0 for t in times)
    assert secret.next_refresh_at != REFRESH_AT  # the jitter moved it


def test_a_new_import_replaces_the_old_without_retiring_anything() -> None:
    world = imported().with_obs(import_digest=salted_digest(UID, "newer-value"))
    manifest, status = issued_state(
        world.obs,
        IssuedToken(
            token_id="import-2",
            values=values(2, T0 + HOUR),
            refresh_token_expires_at=None,
            obtained_at=T0 + HOUR,
            imported_digest=salted_digest(UID, "newer-value"),
        ),
        POLICY,
    )
    assert status.retiring_tokens == ()
    assert status.token_id == "import-2"
    assert observe(manifest).data["refresh_token"] == "refresh-value-2"


# Refresh-only mode against real identity providers (issue 10) -------------------------------

CONFIDENTIAL_WS = TokenWorkspaceSpec.model_validate(
    {
        "provider": "oauth2",
        "oauth2": {
            "tokenEndpoint": "http://idp/token",
            "revocationEndpoint": "http://idp/revoke",
            "clientId": "c",
            "clientSecretRef": {"name": "client"},
        },
    }
)


def test_a_rejected_refresh_token_turns_ready_false_at_once_and_keeps_the_secret() -> None:
    world = imported()
    status = failed_state(world.obs, reasons.REFRESH_TOKEN_REJECTED, "invalid_grant", REFRESH_AT)
    after = world.with_token(status=status)
    # The access token in the Secret is still valid: Ready is False all the same.
    now = REFRESH_AT + timedelta(seconds=1)
    assert after.obs.secret is not None and after.obs.secret.access_token_expires_at is not None
    assert now < after.obs.secret.access_token_expires_at
    decision = decide(after.obs, now, POLICY)
    assert decision.actions == ()
    assert cond(decision, reasons.READY) == ("False", reasons.REFRESH_TOKEN_REJECTED)
    ready = decision.status.condition(reasons.READY)
    assert ready is not None and "import a new refresh token" in ready.message
    # No request until a new value is in the import Secret; then one import.
    later = decide(after.obs, now + HOUR * 5, POLICY)
    assert later.actions == ()
    fresh = after.with_obs(import_digest=salted_digest(UID, "newer-value"))
    assert describe(decide(fresh.obs, now + HOUR, POLICY).actions) == ["Import"]


def test_a_rejection_after_a_lost_answer_says_the_chain_broke() -> None:
    world = imported().with_obs(workspace=workspace(OAUTH2_WS))
    lost = failed_state(
        world.obs, reasons.SERVICE_UNREACHABLE, "no answer", REFRESH_AT, lost_answer=True
    )
    assert lost.last_failure_reason == reasons.RESPONSE_LOST
    # The next attempt (after the backoff) presents the same refresh token once more.
    retry = decide(world.with_token(status=lost).obs, REFRESH_AT + timedelta(minutes=1), POLICY)
    assert describe(retry.actions) == ["Refresh:import-1"]
    rejected = failed_state(
        world.with_token(status=lost).obs,
        reasons.REFRESH_TOKEN_REJECTED,
        "invalid_grant",
        REFRESH_AT + timedelta(minutes=1),
    )
    decision = decide(world.with_token(status=rejected).obs, REFRESH_AT + HOUR, POLICY)
    assert decision.actions == ()
    ready = decision.status.condition(reasons.READY)
    assert ready is not None and ready.reason == reasons.REFRESH_TOKEN_REJECTED
    assert "answer to an earlier refresh was lost" in ready.message


def test_a_lost_answer_outside_refresh_only_mode_stays_service_unreachable() -> None:
    status = failed_state(
        STEADY.obs, reasons.SERVICE_UNREACHABLE, "no answer", REFRESH_AT, lost_answer=True
    )
    assert status.last_failure_reason == reasons.SERVICE_UNREACHABLE


@pytest.mark.parametrize(
    ("reason", "stall"),
    [
        (reasons.CLIENT_REJECTED, True),
        (reasons.CLIENT_SECRET_MISSING, True),
        (reasons.SERVICE_ERROR, False),
    ],
    ids=["invalid-client", "client-secret-missing", "server-error-retries"],
)
def test_rejected_client_settings_are_not_retried_until_they_change(
    reason: str, stall: bool
) -> None:
    world = imported().with_obs(workspace=workspace(CONFIDENTIAL_WS), client_digest="sha256:a")
    status = failed_state(world.obs, reason, "invalid_client", REFRESH_AT)
    after = world.with_token(status=status)
    decision = decide(after.obs, REFRESH_AT + HOUR, POLICY)
    if stall:
        assert decision.actions == ()
        assert cond(decision, reasons.STALLED) == ("True", reason)
        assert cond(decision, reasons.READY) == ("False", reason)
        ready = decision.status.condition(reasons.READY)
        assert ready is not None and "not retried until they change" in ready.message
        fixed = after.with_obs(client_digest="sha256:b")
        assert describe(decide(fixed.obs, REFRESH_AT + HOUR, POLICY).actions) == [
            "Refresh:import-1"
        ]
    else:
        assert describe(decision.actions) == ["Refresh:import-1"]


def test_a_rejected_client_holds_back_a_new_import_too() -> None:
    world = imported().with_obs(workspace=workspace(CONFIDENTIAL_WS), client_digest="sha256:a")
    status = failed_state(world.obs, reasons.CLIENT_REJECTED, "invalid_client", REFRESH_AT)
    fresh = world.with_token(status=status).with_obs(import_digest=salted_digest(UID, "newer"))
    assert decide(fresh.obs, REFRESH_AT + HOUR, POLICY).actions == ()


def test_retry_after_holds_the_next_call_back() -> None:
    world = imported()
    status = failed_state(world.obs, reasons.SERVICE_ERROR, "503", REFRESH_AT, retry_after=120)
    assert status.retry_not_before == REFRESH_AT + timedelta(seconds=120)
    after = world.with_token(status=status)
    # The backoff alone would allow a retry after about 5 s; the provider asked for 2 minutes.
    held = decide(after.obs, REFRESH_AT + timedelta(seconds=30), POLICY)
    assert held.actions == ()
    assert held.requeue_at == REFRESH_AT + timedelta(seconds=120)
    due = decide(after.obs, REFRESH_AT + timedelta(seconds=121), POLICY)
    assert describe(due.actions) == ["Refresh:import-1"]
    _, done = refreshed_state(after.obs, values(3, REFRESH_AT), REFRESH_AT, POLICY)
    assert done.retry_not_before is None and done.failed_refresh_attempts == 0


@pytest.mark.parametrize(
    ("ws", "note"),
    [(CONFIDENTIAL_WS, "revoked at the provider"), (OAUTH2_WS, "in the provider's UI")],
    ids=["with-revocation-endpoint", "without"],
)
def test_disabling_a_refresh_only_token_revokes_it_then_strips_the_secret(
    ws: TokenWorkspaceSpec, note: str
) -> None:
    world = imported().with_obs(workspace=workspace(ws)).with_spec(disabled=True)
    decision = decide(world.obs, T0 + timedelta(minutes=1), POLICY)
    assert describe(decision.actions) == ["Revoke", f"WriteSecret:{reasons.DISABLED}"]
    (revoke,) = [a for a in decision.actions if isinstance(a, Revoke)]
    assert revoke.reason == reasons.DISABLED
    ready = decision.status.condition(reasons.READY)
    assert ready is not None and note in ready.message


def test_a_dead_refresh_token_is_not_revoked_on_deletion() -> None:
    world = (
        imported()
        .with_status(
            failed_refresh_attempts=1,
            last_failure_time=T0,
            last_failure_reason=reasons.REFRESH_TOKEN_REJECTED,
        )
        .with_token(deleting=True)
    )
    decision = decide(world.obs, T0 + HOUR, POLICY)
    assert describe(decision.actions) == ["RemoveFinalizer"]


def test_orphan_never_revokes() -> None:
    world = imported().with_spec(deletion_policy="Orphan").with_token(deleting=True)
    assert "Revoke" not in describe(decide(world.obs, T0 + HOUR, POLICY).actions)
