"""The reconcile core: from what is observed and the time, decide what to do. No I/O.

`decide` is idempotent and level-based: it looks at (ApiToken spec and status, the observed
Secret, the workspace, the tokens the service lists for this ApiToken, now) and answers the
actions to take, in order, and the status that describes the situation. The I/O layer runs the
actions in order and stops at the first failure. A value-producing action (Issue, Import,
Refresh) is followed by `issued_state` / `refreshed_state`, which build the Secret to write
(first, from the values in memory) and the status to record; a failure by `failed_state`.
Then `decide` runs again on the new observation to get the status to write; status and Secret
are written only when they differ from what was observed.

The managed Secret is the source of truth for the token that is in use: the status only
reports, so a crash between writing the Secret and writing the status (or a status lost in a
backup restore) is healed by adopting what the Secret says.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from apitoken_operator.core import held_token as held
from apitoken_operator.core.apitoken.issuance import issued_spec_hash, reissue_reason
from apitoken_operator.core.apitoken.namespaces import namespace_allowed
from apitoken_operator.core.apitoken.rollout import RestartWorkloads, restart_step
from apitoken_operator.core.conditions import Signal, summarize
from apitoken_operator.core.held_token import RetireMode, RetireToken, failure_time, foreign
from apitoken_operator.core.managed_secret import (
    ObservedSecret,
    Owner,
    SecretShape,
    build_secret,
    data_intact,
    disabled_data,
    token_data,
)
from apitoken_operator.core.schedule import (
    TimingPolicy,
    next_refresh_time,
    renewal_time,
)
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    ClusterTokenWorkspaceSpec,
    DeletionPolicy,
    ResolvedApiTokenSpec,
    RetiringToken,
    TokenWorkspaceSpec,
    WorkspaceKind,
)
from apitoken_operator.providers.answers import TokenValues, parse_rfc3339, rfc3339
from apitoken_operator.providers.capabilities import (
    Capabilities,
    capabilities,
    importing_providers,
)

# ---------------------------------------------------------------------------------------------
# What the core looks at.


@dataclass(frozen=True)
class ApiTokenView:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: ApiTokenSpec
    status: ApiTokenStatus = field(default_factory=ApiTokenStatus)
    # Only apitoken.dev/ annotations are read; labels are never looked at (nor copied).
    annotations: Mapping[str, str] = field(default_factory=dict)
    deleting: bool = False


@dataclass(frozen=True)
class WorkspaceView:
    """The referenced workspace as the I/O layer found it."""

    kind: WorkspaceKind
    name: str
    spec: TokenWorkspaceSpec | None  # None: not found
    # Whether the operator's own credential in the workspace works (its Ready condition).
    ready: bool = True
    message: str = ""
    # Labels of the ApiToken's namespace, for ClusterTokenWorkspace.allowedNamespaces.
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    token: ApiTokenView
    secret: ObservedSecret | None
    workspace: WorkspaceView
    # Tokens the service lists for this ApiToken's UID; None when not listed this time (then
    # there is no sweep for leaked tokens).
    service_tokens: tuple[held.ServiceToken, ...] | None = None
    # salted_digest(uid, value) of the refresh token in spec.refreshTokenSecretRef; None when
    # that Secret or key is missing.
    import_digest: str | None = None
    # The ApiToken's namespace is being deleted (or is gone): no Secret can be created there.
    namespace_terminating: bool = False
    # Refresh-only mode: a digest of the workspace's client settings and client secret, so
    # settings the provider rejected are tried again only once they changed.
    client_digest: str | None = None


# ---------------------------------------------------------------------------------------------
# What the core asks for.


@dataclass(frozen=True)
class Revoke:
    """Refresh-only mode: revoke the Secret's refresh token at the provider (RFC 7009), where
    the workspace has a revocation endpoint; otherwise say what to do in the provider's UI."""

    reason: str


# The ApiToken asks for every action of the held-token core (a first token and a re-issue
# are both `Issue`: its reason says which, `reasons.GENERATING` for the first), Revoke, and
# the restart of spec.rolloutRestartTargets.
Action = (
    held.Issue
    | held.Import
    | held.Refresh
    | held.WriteSecret
    | held.RetireToken
    | held.RemoveFinalizer
    | Revoke
    | RestartWorkloads
)
# Revoking calls the provider: it waits out the backoff too.
_SERVICE_CALLS = (*held.SERVICE_CALLS, Revoke)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: ApiTokenStatus
    # When to look again if nothing else happens (None: only on the next event).
    requeue_at: datetime | None


# ---------------------------------------------------------------------------------------------
# The decision.


@dataclass(frozen=True)
class _Verdict:
    ready: bool
    ready_signal: Signal
    reconciling: Signal | None = None
    stalled: Signal | None = None


@dataclass(frozen=True)
class _Current:
    """The token in use, as the managed Secret shows it."""

    token_id: str
    has_access_token: bool
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    # When the operator obtained the access token: the Secret's annotation, written with it.
    obtained_at: datetime | None


def decide(obs: Observation, now: datetime, policy: TimingPolicy) -> Decision:
    token = obs.token
    spec = token.spec.resolve(token.namespace, token.name)
    if token.deleting:
        return _decide_deletion(obs, spec, now, policy)
    blocked = _blocked(obs, spec)
    if blocked is not None:
        status = _with(token.status, secret_name=spec.secret_name)
        return _finish(obs, (), status, blocked, now, now + policy.recheck_interval)
    assert obs.workspace.spec is not None  # _blocked ruled it out
    can = capabilities(obs.workspace.spec)
    if spec.disabled:
        return _decide_disabled(obs, spec, can, now, policy)
    if can.needs_import:
        return _decide_refresh_only(obs, spec, now, policy)
    if spec.import_ref is not None:
        stalled = Signal(
            reasons.INVALID_SPEC,
            "spec.refreshTokenSecretRef is for workspaces with provider "
            f"{' or '.join(importing_providers())}; "
            f"{obs.workspace.kind} {obs.workspace.name} has provider "
            f"{obs.workspace.spec.resolved_provider}",
        )
        verdict = _Verdict(False, stalled, stalled=stalled)
        return _finish(obs, (), token.status, verdict, now, None)
    return _decide_managed(obs, spec, now, policy)


def _blocked(obs: Observation, spec: ResolvedApiTokenSpec) -> _Verdict | None:
    """Situations only a person can resolve: nothing is done until they change."""
    ws = obs.workspace
    token = obs.token
    signal: Signal | None = None
    if ws.spec is None:
        signal = Signal(reasons.WORKSPACE_NOT_FOUND, f"{ws.kind} {ws.name} not found")
    elif isinstance(ws.spec, ClusterTokenWorkspaceSpec) and not namespace_allowed(
        ws.spec.allowed_namespaces, token.namespace, ws.namespace_labels
    ):
        signal = Signal(
            reasons.NOT_ALLOWED,
            f"ClusterTokenWorkspace {ws.name} does not allow namespace {token.namespace} "
            "(spec.allowedNamespaces)",
        )
    elif obs.secret is not None and foreign(obs.secret, token.uid):
        signal = Signal(
            reasons.SECRET_CONFLICT,
            f"Secret {obs.secret.name} exists and is not managed by this ApiToken; "
            "it is left alone: delete it or choose another spec.secretName",
        )
    if signal is None:
        return None
    return _Verdict(False, signal, stalled=signal)


def _current(obs: Observation) -> _Current | None:
    secret = obs.secret
    if secret is None or secret.token_id is None or not data_intact(obs.token.uid, secret):
        return None
    if names.KEY_REFRESH_TOKEN not in secret.data:
        return None
    status = obs.token.status
    refresh_expires = secret.refresh_token_expires_at or (
        status.refresh_token_expires_at if status.token_id == secret.token_id else None
    )
    return _Current(
        token_id=secret.token_id,
        has_access_token=names.KEY_ACCESS_TOKEN in secret.data,
        access_expires_at=secret.access_token_expires_at,
        refresh_expires_at=refresh_expires,
        obtained_at=secret.refreshed_at,
    )


def _adopt(obs: Observation, spec: ResolvedApiTokenSpec, current: _Current) -> ApiTokenStatus:
    """Make the status describe the token the Secret holds."""
    status = obs.token.status
    same_token = status.token_id == current.token_id
    retiring = status.retiring_tokens
    if status.token_id and not same_token:
        # The Secret was switched to a new token and the status not yet (a crash between).
        retiring = _add_retiring(retiring, status.token_id, status.token_workspace)
    return _with(
        status,
        token_id=current.token_id,
        token_workspace=status.token_workspace if same_token else workspace_key(spec),
        retiring_tokens=retiring,
        secret_name=spec.secret_name,
        refresh_token_expires_at=current.refresh_expires_at,
        # A Secret written just before a crash holds a token made for the current spec.
        issued_spec_hash=status.issued_spec_hash if same_token else issued_spec_hash(spec),
    )


def _timing(
    obs: Observation,
    spec: ResolvedApiTokenSpec,
    current: _Current,
    now: datetime,
    policy: TimingPolicy,
) -> tuple[datetime, datetime | None]:
    """(next refresh, renewal). An access token of unknown age is refreshed now."""
    if (
        current.obtained_at is None
        or current.access_expires_at is None
        or not current.has_access_token
    ):
        refresh_at = now
    else:
        refresh_at = _plan(
            spec, current.token_id, current.obtained_at, current.access_expires_at, policy
        )
    renew_at = (
        renewal_time(refresh_expires_at=current.refresh_expires_at, renew_before=spec.renew_before)
        if current.refresh_expires_at is not None
        else None
    )
    return refresh_at, renew_at


def _retry_at(obs: Observation, policy: TimingPolicy) -> datetime | None:
    """The backoff after failures, or later if the provider said so (Retry-After)."""
    status = obs.token.status
    at = held.retry_at(
        status.failed_refresh_attempts, status.last_failure_time, obs.token.uid, policy
    )
    if at is not None and status.retry_not_before is not None:
        return max(at, status.retry_not_before)
    return at


def _plan(
    spec: ResolvedApiTokenSpec,
    token_id: str,
    obtained_at: datetime,
    expires_at: datetime,
    policy: TimingPolicy,
) -> datetime:
    """The refresh time, in whole seconds (rounded up: the margin before expiry is far more
    than a second) so that the Secret's next-refresh-at is exactly the time the run waits for."""
    planned = next_refresh_time(
        obtained_at=obtained_at,
        expires_at=expires_at,
        refresh_percent=spec.refresh_percent,
        token_id=token_id,
        policy=policy,
    )
    return held.whole_up(planned)


def _as_written(moment: datetime) -> datetime:
    """A moment as the Secret's RFC 3339 text gives it back: the plan written with new values
    is then the plan every later run computes from the Secret (no drift to repair)."""
    return parse_rfc3339(rfc3339(moment))


def _written_schedule(
    spec: ResolvedApiTokenSpec,
    token_id: str,
    values: TokenValues,
    obtained_at: datetime,
    policy: TimingPolicy,
) -> tuple[datetime, datetime]:
    """(refreshed-at, next-refresh-at) of the Secret written with new values."""
    obtained = _as_written(obtained_at)
    expires = _as_written(values.access_token_expires_at)
    return obtained, _plan(spec, token_id, obtained, expires, policy)


def _shape(
    obs: Observation,
    spec: ResolvedApiTokenSpec,
    token_id: str,
    refresh_expires_at: datetime | None,
    *,
    owner_reference: bool | None = None,
    schedule: tuple[datetime, datetime] | None = None,
) -> SecretShape:
    """`schedule`: the access token's (refreshed-at, next-refresh-at); None for a Secret that
    holds no access token the operator keeps fresh (disabled, orphaned)."""
    token = obs.token
    return SecretShape(
        namespace=token.namespace,
        name=spec.secret_name,
        owner=Owner(name=token.name, uid=token.uid),
        set_owner_reference=(
            spec.deletion_policy is not DeletionPolicy.ORPHAN
            if owner_reference is None
            else owner_reference
        ),
        token_id=token_id,
        refresh_token_expires_at=refresh_expires_at,
        template_labels=spec.secret_labels,
        template_annotations=spec.secret_annotations,
        refreshed_at=schedule[0] if schedule else None,
        next_refresh_at=schedule[1] if schedule else None,
    )


def _repair_shape(
    obs: Observation, spec: ResolvedApiTokenSpec, current: _Current, refresh_at: datetime
) -> SecretShape:
    """The shape a Secret holding a fresh access token should have: its schedule included (a
    missing next-refresh-at is written back; a changed spec.refreshPercent moves it)."""
    schedule = (current.obtained_at, refresh_at) if current.obtained_at is not None else None
    return _shape(obs, spec, current.token_id, current.refresh_expires_at, schedule=schedule)


def _retire_mode(spec: ResolvedApiTokenSpec) -> RetireMode:
    # A token replaced by a re-issue is never kept active: Orphan only concerns deletion.
    return (
        RetireMode.DELETE if spec.deletion_policy is DeletionPolicy.DELETE else RetireMode.DISABLE
    )


def _issue(spec: ResolvedApiTokenSpec, reason: str) -> held.Issue:
    return held.Issue(reason, spec.token_name, spec.lifetime_days)


def workspace_key(spec: ResolvedApiTokenSpec) -> str:
    return f"{spec.workspace_kind}/{spec.workspace_name}"


def _add_retiring(
    retiring: tuple[RetiringToken, ...], token_id: str, workspace: str | None
) -> tuple[RetiringToken, ...]:
    if any(r.id == token_id for r in retiring):
        return retiring
    return (*retiring, RetiringToken(id=token_id, workspace=workspace))


def _pending(
    status: ApiTokenStatus, spec: ResolvedApiTokenSpec, mode: RetireMode
) -> list[RetireToken]:
    """Replaced tokens not yet retired (a failure or a crash interrupted it)."""
    here = workspace_key(spec)
    return [
        RetireToken(
            r.id,
            mode,
            reasons.TOKEN_REPLACED,
            workspace=None if r.workspace in (None, here) else r.workspace,
        )
        for r in status.retiring_tokens
    ]


def _sweep(obs: Observation, keep: Iterable[str | None], mode: RetireMode) -> list[RetireToken]:
    """Retire the tokens tagged with this ApiToken's UID that no Secret holds."""
    if obs.service_tokens is None:
        return []
    kept = {k for k in keep if k}
    return [
        RetireToken(t.id, mode, reasons.UNUSED_TOKEN)
        for t in obs.service_tokens
        if t.id not in kept
        and t.external_ref in (None, obs.token.uid)
        and (mode is RetireMode.DELETE or t.status == "active")
    ]


def _dedupe(actions: Sequence[Action]) -> tuple[Action, ...]:
    seen: set[str] = set()
    out: list[Action] = []
    for action in actions:
        if isinstance(action, RetireToken):
            if action.token_id in seen:
                continue
            seen.add(action.token_id)
        out.append(action)
    return tuple(out)


def _gate(
    obs: Observation,
    actions: Sequence[Action],
    verdict: _Verdict,
    policy: TimingPolicy,
    now: datetime,
    *,
    management_ok: bool,
) -> tuple[tuple[Action, ...], _Verdict, datetime | None]:
    """Hold back new tokens in a namespace being deleted, service calls during a backoff and
    management calls without a working workspace credential; say so in Reconciling."""
    recheck: datetime | None = None
    if obs.namespace_terminating and any(isinstance(a, held.NEW_TOKEN) for a in actions):
        # The namespace's deletion may remove the Secret a moment before the ApiToken is marked
        # for deletion: a token issued now could not be written (creating a Secret in a
        # terminating namespace is forbidden) and would only be disabled by the cleanup.
        actions = [a for a in actions if not isinstance(a, held.NEW_TOKEN)]
        signal = Signal(
            reasons.NAMESPACE_TERMINATING,
            f"namespace {obs.token.namespace} is being deleted: no new token is issued",
        )
        verdict = replace(verdict, reconciling=signal)
        recheck = now + policy.recheck_interval
    actions = _dedupe(actions)
    status = obs.token.status
    retry_at = _retry_at(obs, policy)
    if (
        retry_at is not None
        and now < retry_at
        and any(isinstance(a, _SERVICE_CALLS) for a in actions)
    ):
        kept: tuple[Action, ...] = tuple(a for a in actions if not isinstance(a, _SERVICE_CALLS))
        signal = Signal(
            status.last_failure_reason or reasons.SERVICE_ERROR,
            f"attempt {status.failed_refresh_attempts} failed: "
            f"{status.last_failure_message or 'no details'}; retrying at {rfc3339(retry_at)}",
        )
        return kept, replace(verdict, reconciling=signal), min(d for d in (retry_at, recheck) if d)
    if not management_ok and any(isinstance(a, held.MANAGEMENT_CALLS) for a in actions):
        kept = tuple(a for a in actions if not isinstance(a, held.MANAGEMENT_CALLS))
        signal = Signal(
            reasons.WORKSPACE_NOT_READY,
            f"{obs.workspace.kind} {obs.workspace.name} is not ready"
            + (f": {obs.workspace.message}" if obs.workspace.message else ""),
        )
        return kept, replace(verdict, reconciling=signal), now + policy.recheck_interval
    return tuple(actions), verdict, recheck


def _work_signal(actions: Sequence[Action]) -> Signal | None:
    for action in actions:
        match action:
            case held.Issue(reason=reasons.GENERATING):
                return Signal(reasons.GENERATING, f"generating a token ({reasons.GENERATING})")
            case held.Issue(reason=reason):
                return Signal(reasons.REISSUING, f"re-issuing the token: {reason}")
            case held.Import():
                return Signal(reasons.IMPORTING, "importing the refresh token")
            case held.Refresh():
                return Signal(reasons.REFRESHING, "refreshing the access token")
            case Revoke():
                return Signal(reasons.DISABLING, "revoking the refresh token at the provider")
            case RetireToken(reason=reasons.DISABLED):
                return Signal(reasons.DISABLING, "disabling the token at the service")
            case RetireToken(reason=reason):
                return Signal(reasons.CLEANING_UP, f"retiring unused tokens ({reason})")
            case held.WriteSecret(reason=reason):
                return Signal(reasons.UPDATING_SECRET, f"updating the Secret ({reason})")
            case RestartWorkloads(targets=targets):
                return Signal(
                    reasons.ROLLOUT_RESTARTED,
                    f"restarting {len(targets)} workload(s) for the new token",
                )
            case held.RemoveFinalizer():
                return None
    return None


def _finish(
    obs: Observation,
    actions: Sequence[Action],
    status: ApiTokenStatus,
    verdict: _Verdict,
    now: datetime,
    requeue_at: datetime | None,
) -> Decision:
    token = obs.token
    if verdict.reconciling is None and verdict.stalled is None:
        verdict = replace(verdict, reconciling=_work_signal(actions))
    conditions = summarize(
        token.status.conditions,
        ready=verdict.ready,
        ready_signal=verdict.ready_signal,
        reconciling=verdict.reconciling,
        stalled=verdict.stalled,
        generation=token.generation,
        now=now,
    )
    status = _with(status, observed_generation=token.generation, conditions=conditions)
    return Decision(actions=tuple(actions), status=status, requeue_at=requeue_at)


def _failure_signal(status: ApiTokenStatus, fallback: Signal) -> Signal:
    if status.last_failure_reason is None:
        return fallback
    return Signal(status.last_failure_reason, status.last_failure_message or "")


def _decide_managed(
    obs: Observation, spec: ResolvedApiTokenSpec, now: datetime, policy: TimingPolicy
) -> Decision:
    token = obs.token
    secret = obs.secret
    current = _current(obs)
    mode = _retire_mode(spec)
    actions: list[Action] = []
    status = _with(token.status, secret_name=spec.secret_name)
    requeue: list[datetime] = []

    if current is None:
        old = (secret.token_id if secret is not None else None) or token.status.token_id
        if secret is None and old is None:
            actions.append(_issue(spec, reasons.GENERATING))
        else:
            reason = reasons.SECRET_DELETED if secret is None else reasons.SECRET_MODIFIED
            actions.append(_issue(spec, reason))
        actions.extend(_pending(status, spec, mode))
        actions.extend(_sweep(obs, (), mode))
        fallback = Signal(reasons.GENERATING, f"no usable token in Secret {spec.secret_name} yet")
        verdict = _Verdict(False, _failure_signal(status, fallback))
    else:
        status = _adopt(obs, spec, current)
        refresh_at, renew_at = _timing(obs, spec, current, now, policy)
        status = _with(status, renewal_time=held.whole_or_none(renew_at))
        why = reissue_reason(
            spec=spec,
            status=status,
            reissue_annotation=token.annotations.get(names.ANNOTATION_REISSUE),
            renewal_at=renew_at,
            now=now,
        )
        # Without a working workspace credential a re-issue waits; refreshes go on meanwhile
        # (except for a token the service already rejected).
        reissue_waits = why is not None and not obs.workspace.ready and why != reasons.TOKEN_REVOKED
        restart_waits = None
        if why is None or reissue_waits:
            status, restart_waits = _rollout(
                spec, current.token_id, status, now, policy, actions, requeue
            )
        if why is not None and not reissue_waits:
            actions.append(_issue(spec, why))
        elif now >= refresh_at:
            actions.append(held.Refresh(current.token_id))
        else:
            shape = _repair_shape(obs, spec, current, refresh_at)
            assert secret is not None  # _current found it
            actions.extend(held.repair(shape, secret))
            requeue.append(refresh_at)
            if renew_at is not None:
                requeue.append(renew_at)
        actions.extend(_pending(status, spec, mode))
        actions.extend(_sweep(obs, (current.token_id,), mode))
        valid = (
            current.has_access_token
            and current.access_expires_at is not None
            and now < current.access_expires_at
        )
        if valid:
            ready_signal = Signal(
                reasons.TOKEN_READY,
                f"Secret {spec.secret_name} holds a valid access token",
            )
        else:
            ready_signal = _failure_signal(
                status,
                Signal(reasons.ACCESS_TOKEN_EXPIRED, "the access token in the Secret expired"),
            )
        verdict = _Verdict(valid, ready_signal)
        if restart_waits is not None:
            verdict = replace(verdict, reconciling=restart_waits)
        if reissue_waits:
            verdict = replace(
                verdict,
                reconciling=Signal(
                    reasons.WORKSPACE_NOT_READY,
                    f"re-issue ({why}) waits for {obs.workspace.kind} {obs.workspace.name}",
                ),
            )
            requeue.append(now + policy.recheck_interval)

    kept, verdict, retry = _gate(
        obs, actions, verdict, policy, now, management_ok=obs.workspace.ready
    )
    if retry is not None:
        requeue.append(retry)
    return _finish(obs, kept, status, verdict, now, min(requeue) if requeue else None)


def _rollout(
    spec: ResolvedApiTokenSpec,
    token_id: str,
    status: ApiTokenStatus,
    now: datetime,
    policy: TimingPolicy,
    actions: list[Action],
    requeue: list[datetime],
) -> tuple[ApiTokenStatus, Signal | None]:
    """spec.rolloutRestartTargets, once per token the Secret holds (`restart_step`): adds the
    restart to `actions`; the status to carry on with, and Reconciling's signal while a failed
    restart waits to be retried."""
    step = restart_step(
        spec.rollout_restart_targets, token_id, status.rollout_restart, now, policy.recheck_interval
    )
    if step.action is not None:
        actions.append(step.action)
    if step.requeue_at is not None:
        requeue.append(step.requeue_at)
    return _with(status, rollout_restart=step.status), step.waiting


def _decide_disabled(
    obs: Observation,
    spec: ResolvedApiTokenSpec,
    can: Capabilities,
    now: datetime,
    policy: TimingPolicy,
) -> Decision:
    token = obs.token
    secret = obs.secret
    status = _with(token.status, secret_name=spec.secret_name, renewal_time=None)
    actions: list[Action] = []
    holding = secret is not None and secret.holds_tokens
    if can.manages_tokens:
        # A stripped Secret is the mark that the disable went through: it is written after.
        if secret is None or holding:
            for token_id in (token.status.token_id, secret.token_id if secret else None):
                if token_id:
                    actions.append(RetireToken(token_id, RetireMode.DISABLE, reasons.DISABLED))
        actions.extend(_pending(token.status, spec, RetireMode.DISABLE))
        actions.extend(_sweep(obs, (), RetireMode.DISABLE))
    elif holding and _revocable(obs):
        actions.append(Revoke(reasons.DISABLED))
    if secret is not None and holding:
        token_id = secret.token_id or token.status.token_id or ""
        shape = _shape(obs, spec, token_id, secret.refresh_token_expires_at)
        actions.append(
            held.WriteSecret(reasons.DISABLED, build_secret(shape, disabled_data(secret.data)))
        )
    message = "the token is disabled; its Secret holds no usable token"
    if not can.manages_tokens:
        message += _revocation_note(obs)
    verdict = _Verdict(False, Signal(reasons.DISABLED, message))
    kept, verdict, retry = _gate(
        obs, actions, verdict, policy, now, management_ok=obs.workspace.ready
    )
    return _finish(obs, kept, status, verdict, now, retry)


def _decide_refresh_only(
    obs: Observation, spec: ResolvedApiTokenSpec, now: datetime, policy: TimingPolicy
) -> Decision:
    token = obs.token
    status = _with(token.status, secret_name=spec.secret_name)
    ref = spec.import_ref
    if ref is None:
        required = Signal(
            reasons.IMPORT_REQUIRED,
            "provider oauth2 is refresh-only: set spec.refreshTokenSecretRef to a Secret "
            "holding a refresh token made in the provider's UI",
        )
        verdict = _Verdict(False, required, stalled=required)
        return _finish(obs, (), status, verdict, now, None)
    where = f"Secret {ref.name} key {ref.resolved_key}"
    current = _current(obs)
    new_import = obs.import_digest is not None and obs.import_digest != status.imported_token_digest
    actions: list[Action] = []
    requeue: list[datetime] = []
    stalled: Signal | None = None
    restart_waits: Signal | None = None
    valid = False
    if current is not None:
        status = _adopt(obs, spec, current)
        valid = (
            current.has_access_token
            and current.access_expires_at is not None
            and now < current.access_expires_at
        )
    client_stall = _client_stall(obs)
    if client_stall is not None:
        # Calling again with the same client settings gets the same answer.
        stalled = client_stall
    elif new_import:
        assert obs.import_digest is not None
        actions.append(held.Import(obs.import_digest))
    elif current is None:
        if obs.import_digest is None:
            stalled = Signal(reasons.IMPORT_SECRET_MISSING, f"{where} not found")
        else:
            stalled = Signal(
                reasons.IMPORT_REQUIRED,
                f"the refresh token in {where} was already used and the managed Secret "
                f"{spec.secret_name} holds none: put a new refresh token in {where}",
            )
    elif status.last_failure_reason == reasons.REFRESH_TOKEN_REJECTED:
        if (status.last_failure_message or "").startswith(LOST_CHAIN):
            message = (
                "the provider rejected the refresh token (invalid_grant) right after the answer "
                "to an earlier refresh was lost: it most likely rotated the token on that "
                f"request, so the chain is broken; import a new refresh token into {where}"
            )
        else:
            message = (
                "the provider rejected the refresh token (invalid_grant: disabled, deleted or "
                f"expired in its UI, or a broken chain): import a new refresh token into {where}"
            )
        stalled = Signal(reasons.REFRESH_TOKEN_REJECTED, message)
    elif current.refresh_expires_at is not None and now >= current.refresh_expires_at:
        stalled = Signal(
            reasons.REFRESH_TOKEN_EXPIRED,
            f"the refresh token expired: put a new one in {where}",
        )
    else:
        refresh_at, _ = _timing(obs, spec, current, now, policy)
        status = _with(status, renewal_time=None)
        # A newly imported token counts as a re-issue for spec.rolloutRestartTargets.
        status, restart_waits = _rollout(
            spec, current.token_id, status, now, policy, actions, requeue
        )
        if now >= refresh_at:
            actions.append(held.Refresh(current.token_id))
        else:
            assert obs.secret is not None
            shape = _repair_shape(obs, spec, current, refresh_at)
            actions.extend(held.repair(shape, obs.secret))
            requeue.append(refresh_at)
    if stalled is not None:
        # Ready=False at once, though the Secret keeps its access token until it expires: the
        # token will not be refreshed again without a person.
        ready_signal = stalled
        valid = False
    elif valid:
        ready_signal = Signal(
            reasons.TOKEN_READY, f"Secret {spec.secret_name} holds a valid access token"
        )
    else:
        ready_signal = _failure_signal(
            status, Signal(reasons.IMPORTING, f"no usable token in Secret {spec.secret_name} yet")
        )
    verdict = _Verdict(valid, ready_signal, stalled=stalled)
    if restart_waits is not None:
        verdict = replace(verdict, reconciling=restart_waits)
    kept, verdict, retry = _gate(obs, actions, verdict, policy, now, management_ok=True)
    if retry is not None:
        requeue.append(retry)
    if stalled is not None:
        requeue.append(now + policy.recheck_interval)
    return _finish(obs, kept, status, verdict, now, min(requeue) if requeue else None)


def _decide_deletion(
    obs: Observation, spec: ResolvedApiTokenSpec, now: datetime, policy: TimingPolicy
) -> Decision:
    token = obs.token
    status = token.status
    if token.annotations.get(names.ANNOTATION_ABANDON) == "true":
        signal = Signal(
            reasons.CLEANING_UP,
            f"{names.ANNOTATION_ABANDON} is set: released without cleaning up at the service",
        )
        return _finish(
            obs, (held.RemoveFinalizer("abandoned"),), status, _Verdict(False, signal), now, None
        )
    secret = obs.secret
    ours = secret if secret is not None and not foreign(secret, token.uid) else None
    ws = obs.workspace
    actions: list[Action] = []
    service_side = ws.spec is not None and capabilities(ws.spec).manages_tokens
    current_id = (ours.token_id if ours else None) or status.token_id
    known = [status.token_id, ours.token_id if ours else None]
    policy_ = spec.deletion_policy
    if policy_ is DeletionPolicy.ORPHAN:
        if ours is not None and token.uid in ours.owner_uids and ours.token_id:
            shape = _shape(
                obs, spec, ours.token_id, ours.refresh_token_expires_at, owner_reference=False
            )
            actions.append(held.WriteSecret("orphaned", build_secret(shape, ours.data)))
        if service_side:
            actions.extend(_pending(status, spec, RetireMode.DISABLE))
            actions.extend(_sweep(obs, (current_id,), RetireMode.DISABLE))
    elif service_side:
        mode = RetireMode.DELETE if policy_ is DeletionPolicy.DELETE else RetireMode.DISABLE
        reason = f"deletionPolicy {policy_}"
        actions.extend(RetireToken(t, mode, reason) for t in known if t)
        actions.extend(_pending(status, spec, mode))
        actions.extend(_sweep(obs, (), mode))
    elif ours is not None and ours.holds_tokens and _revocable(obs):
        actions.append(Revoke(f"deletionPolicy {policy_}"))
    pending = Signal(
        reasons.CLEANUP_PENDING,
        f"waiting to {str(policy_).lower()} the token at the service before the ApiToken goes; "
        f'set the annotation {names.ANNOTATION_ABANDON}="true" to release it without cleanup',
    )
    if ws.spec is None and (known[0] or known[1]) and policy_ is not DeletionPolicy.ORPHAN:
        # Without the workspace there is no way to reach the service.
        verdict = _Verdict(False, pending, reconciling=pending)
        return _finish(obs, (), status, verdict, now, now + policy.recheck_interval)
    actions = list(_dedupe(actions))
    verdict = _Verdict(False, Signal(reasons.CLEANING_UP, "the ApiToken is being deleted"))
    kept, verdict, retry = _gate(obs, actions, verdict, policy, now, management_ok=ws.ready)
    if len(kept) < len(actions):
        verdict = replace(
            verdict, reconciling=pending if verdict.reconciling is None else verdict.reconciling
        )
        return _finish(obs, kept, status, verdict, now, retry or now + policy.recheck_interval)
    if service_side and obs.service_tokens is None:
        # A token whose answer a crash lost, or that a failed retire left, is known only to the
        # service's list: released without it, the finalizer would leave that token active.
        unlisted = Signal(
            reasons.CLEANUP_PENDING,
            "the tokens tagged with this ApiToken could not be listed at the service "
            f"(see the operator's log); {pending.message}",
        )
        verdict = replace(verdict, reconciling=unlisted)
        return _finish(obs, kept, status, verdict, now, now + policy.recheck_interval)
    return _finish(
        obs, (*kept, held.RemoveFinalizer(f"deletionPolicy {policy_}")), status, verdict, now, None
    )


# ---------------------------------------------------------------------------------------------
# After the I/O layer ran a value-producing action.


# The one place the ApiToken names its attempts counter for the shared failure rules.
_ATTEMPTS = "failed_refresh_attempts"


def _success(status: ApiTokenStatus) -> ApiTokenStatus:
    return held.succeeded(status, _ATTEMPTS, retry_not_before=None, rejected_client_digest=None)


def issued_state(
    obs: Observation, issued: held.IssuedToken, policy: TimingPolicy
) -> tuple[dict[str, Any], ApiTokenStatus]:
    """The Secret to write, first, and the status to record after a token was issued."""
    token = obs.token
    spec = token.spec.resolve(token.namespace, token.name)
    schedule = _written_schedule(spec, issued.token_id, issued.values, issued.obtained_at, policy)
    shape = _shape(obs, spec, issued.token_id, issued.refresh_token_expires_at, schedule=schedule)
    manifest = build_secret(shape, token_data(issued.values))
    retiring = token.status.retiring_tokens
    secret = obs.secret
    replaced = [token.status.token_id]
    if secret is not None and not foreign(secret, token.uid):
        replaced.append(secret.token_id)
    for old in replaced if issued.imported_digest is None else ():
        # Imported tokens cannot be retired (refresh-only mode has no management API).
        if old and old != issued.token_id:
            retiring = _add_retiring(retiring, old, token.status.token_workspace)
    status = _with(
        _success(token.status),
        token_id=issued.token_id,
        token_workspace=workspace_key(spec),
        retiring_tokens=retiring,
        secret_name=spec.secret_name,
        refresh_token_expires_at=held.whole_or_none(issued.refresh_token_expires_at),
        issued_spec_hash=issued_spec_hash(spec),
        last_reissue_request=token.annotations.get(
            names.ANNOTATION_REISSUE, token.status.last_reissue_request
        ),
        imported_token_digest=issued.imported_digest or token.status.imported_token_digest,
    )
    return manifest, status


def refreshed_state(
    obs: Observation, values: TokenValues, obtained_at: datetime, policy: TimingPolicy
) -> tuple[dict[str, Any], ApiTokenStatus]:
    """The Secret to write, first, and the status to record after a refresh.

    The refresh token keeps its final expiry across rotations; a provider that does not rotate
    returns no refresh token, and the I/O layer passes the one it used.
    """
    token = obs.token
    secret = obs.secret
    spec = token.spec.resolve(token.namespace, token.name)
    token_id = (secret.token_id if secret else None) or token.status.token_id or ""
    refresh_expires = (
        secret.refresh_token_expires_at if secret else None
    ) or token.status.refresh_token_expires_at
    schedule = _written_schedule(spec, token_id, values, obtained_at, policy)
    shape = _shape(obs, spec, token_id, refresh_expires, schedule=schedule)
    manifest = build_secret(shape, token_data(values))
    status = _with(
        _success(token.status),
        token_id=token_id,
        secret_name=spec.secret_name,
        refresh_token_expires_at=held.whole_or_none(refresh_expires),
    )
    return manifest, status


def may_write_held_values(obs: Observation) -> bool:
    """Whether values an earlier run could not write may still go to the Secret: not once the
    ApiToken is being deleted or disabled, and never over a Secret it does not manage."""
    token = obs.token
    if token.deleting or token.spec.disabled:
        return False
    return obs.secret is None or not foreign(obs.secret, token.uid)


def retired_state(obs: Observation, token_id: str) -> ApiTokenStatus:
    """The status after a token was disabled or deleted (or found gone) at the service."""
    status = obs.token.status
    return _with(
        status, retiring_tokens=tuple(r for r in status.retiring_tokens if r.id != token_id)
    )


def failed_state(
    obs: Observation,
    reason: str,
    message: str,
    now: datetime,
    *,
    consumed_import_digest: str | None = None,
    retry_after: float | None = None,
    lost_answer: bool = False,
) -> ApiTokenStatus:
    """The status after a failed call: counts the attempt for the backoff.

    `message` must come from the service client's exceptions, which never carry token values.
    An imported refresh token that was rejected is remembered as used, so it is not retried.
    A provider's Retry-After holds the next call back at least that long. In refresh-only mode
    a request whose answer was lost is recorded as ResponseLost, so that an invalid_grant on
    the next attempt (the provider rotated, the new token never arrived) says so; rejected
    client settings are remembered by digest, so they are not tried again unchanged.
    """
    status = obs.token.status
    refresh_only = obs.workspace.spec is not None and capabilities(obs.workspace.spec).needs_import
    if lost_answer and refresh_only:
        reason = reasons.RESPONSE_LOST
    if reason == reasons.REFRESH_TOKEN_REJECTED and status.last_failure_reason == (
        reasons.RESPONSE_LOST
    ):
        message = LOST_CHAIN + message
    digest = consumed_import_digest or status.imported_token_digest
    not_before = (
        failure_time(now + timedelta(seconds=retry_after)) if retry_after is not None else None
    )
    return held.failed(
        status,
        _ATTEMPTS,
        reason,
        message,
        now,
        imported_token_digest=digest,
        retry_not_before=not_before,
        rejected_client_digest=obs.client_digest if reason in _CLIENT_STALLS else None,
    )


# Marks a rejection that followed a lost answer (the chain broken by it).
LOST_CHAIN = "after a lost answer: "
# Failures of the client settings themselves: not retried until they change.
_CLIENT_STALLS = (reasons.CLIENT_REJECTED, reasons.CLIENT_SECRET_MISSING)


def _client_stall(obs: Observation) -> Signal | None:
    status = obs.token.status
    if status.last_failure_reason not in _CLIENT_STALLS:
        return None
    if status.rejected_client_digest != obs.client_digest:
        return None  # the settings or the secret changed since: try them
    ws = f"{obs.workspace.kind} {obs.workspace.name}"
    if status.last_failure_reason == reasons.CLIENT_SECRET_MISSING:
        what = f"the client secret of {ws} is missing ({status.last_failure_message})"
    else:
        what = (
            f"the provider refused the client settings of {ws} "
            f"({status.last_failure_message}): fix spec.oauth2 clientId, clientAuthMethod or "
            "the Secret in clientSecretRef"
        )
    return Signal(
        status.last_failure_reason or reasons.CLIENT_REJECTED,
        what + "; not retried until they change",
    )


def _revocable(obs: Observation) -> bool:
    """Whether the refresh token in the Secret is still worth revoking (refresh-only mode)."""
    secret = obs.secret
    if secret is None or not secret.data.get(names.KEY_REFRESH_TOKEN):
        return False
    # A token the provider already rejected is dead: nothing to revoke.
    return obs.token.status.last_failure_reason != reasons.REFRESH_TOKEN_REJECTED


def _revocation_note(obs: Observation) -> str:
    ws = obs.workspace.spec
    if ws is not None and ws.revocation_configured:
        return " (its refresh token is revoked at the provider)"
    return (
        " (the workspace names no oauth2.revocationEndpoint, so the refresh token is not "
        "revoked: disable or delete it in the provider's UI)"
    )


def _with(status: ApiTokenStatus, **changes: Any) -> ApiTokenStatus:
    return status.model_copy(update=changes)
