"""The operator's own credential in a workspace: bootstrap once, refresh, renew. No I/O.

A TokenWorkspace names a Secret with a bootstrap refresh token, usually from Git (sealed or
external secrets). Refresh tokens rotate on use, so that value works once: the operator refreshes
with it, keeps the rotated pair in a credential Secret of its own, and records only a salted
digest of the bootstrap value, so a stale copy re-applied by a GitOps tool is never presented
again (a replay would make the service disable the whole token). Before its own token expires
the operator generates a new one for itself through the management API, switches the credential
Secret to it, and disables the old one, so a workspace keeps working with no human for longer
than any token's lifetime. A new bootstrap value (a different digest) replaces the credential.
"""

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from apitoken_operator.core import held_token as held
from apitoken_operator.core.conditions import Signal, summarize
from apitoken_operator.core.managed_secret import (
    ObservedSecret,
    Owner,
    SecretShape,
    build_secret,
    data_intact,
    token_data,
)
from apitoken_operator.core.schedule import TimingPolicy, next_refresh_time
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.resources import (
    DEFAULT_REFRESH_PERCENT,
    TokenWorkspaceSpec,
    TokenWorkspaceStatus,
    WorkspaceKind,
)
from apitoken_operator.providers.answers import rfc3339
from apitoken_operator.providers.capabilities import capabilities


class CredentialPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Lifetime of the tokens the operator generates for itself.
    lifetime_days: int = Field(default=90, ge=1, le=365)
    # How long before its refresh token expires the credential is renewed; None means a third
    # of the lifetime (cert-manager's default for renewBefore).
    renew_before: timedelta | None = None
    # Where credential Secrets of ClusterTokenWorkspaces live (the operator's namespace).
    operator_namespace: str = "apitoken-operator"
    timing: TimingPolicy = TimingPolicy()


# The one place the workspace names its attempts counter for the shared failure rules.
_ATTEMPTS = "failed_attempts"


def _renew_before(policy: CredentialPolicy) -> timedelta:
    if policy.renew_before is not None:
        return policy.renew_before
    return timedelta(days=policy.lifetime_days) / 3


@dataclass(frozen=True)
class WorkspaceObject:
    kind: WorkspaceKind
    name: str
    namespace: str | None  # None for a ClusterTokenWorkspace
    uid: str
    generation: int
    spec: TokenWorkspaceSpec
    status: TokenWorkspaceStatus = field(default_factory=TokenWorkspaceStatus)


@dataclass(frozen=True)
class CredentialObservation:
    workspace: WorkspaceObject
    # The operator's credential Secret (see credential_secret_ref), if it exists.
    secret: ObservedSecret | None
    # salted_digest(workspace uid, bootstrap value); None when that Secret or key is missing.
    bootstrap_digest: str | None


# The credential asks for the held-token core's actions but RemoveFinalizer (its workspace's
# finalizer is decided by `deletion`): a renewal is an `Issue` for the operator itself, made
# with the current credential, followed by a RetireToken that disables the old token.
CredentialAction = held.Issue | held.Import | held.Refresh | held.RetireToken | held.WriteSecret


@dataclass(frozen=True)
class CredentialDecision:
    actions: tuple[CredentialAction, ...]
    status: TokenWorkspaceStatus
    requeue_at: datetime | None
    # Whether ApiTokens may use the management API through this credential now.
    usable: bool


def credential_secret_ref(ws: WorkspaceObject, policy: CredentialPolicy) -> tuple[str, str]:
    """(namespace, name) of the operator's credential Secret for a workspace."""
    return credential_secret_location(ws.kind, ws.namespace, ws.name, policy)


def credential_secret_location(
    kind: WorkspaceKind, namespace: str | None, name: str, policy: CredentialPolicy
) -> tuple[str, str]:
    """(namespace, name) of the credential Secret of the workspace `kind` `namespace`/`name`."""
    if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE or namespace is None:
        return policy.operator_namespace, f"ctokws-{name}-credential"
    return namespace, f"{name}-apitoken-credential"


def credential_token_name(ws: WorkspaceObject) -> str:
    where = ws.namespace or "cluster"
    return f"apitoken-operator/{where}/{ws.name}"


def token_claims(access_token: str) -> tuple[str | None, str | None]:
    """(sub, tid) read from a JWT access token without verifying it: for display and for naming
    the token a bootstrap value belongs to, never for trust."""
    try:
        payload = access_token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    sub, tid = claims.get("sub"), claims.get("tid")
    return (str(sub) if sub else None), (str(tid) if tid else None)


def _shape(
    ws: WorkspaceObject, policy: CredentialPolicy, token_id: str, expires: datetime | None
) -> SecretShape:
    namespace, name = credential_secret_ref(ws, policy)
    return SecretShape(
        namespace=namespace,
        name=name,
        owner=Owner(name=ws.name, uid=ws.uid, kind=ws.kind.value),
        set_owner_reference=True,
        token_id=token_id,
        refresh_token_expires_at=expires,
        template_labels={},
        template_annotations={},
    )


def _with(status: TokenWorkspaceStatus, **changes: Any) -> TokenWorkspaceStatus:
    return status.model_copy(update=changes)


def decide_credential(
    obs: CredentialObservation, now: datetime, policy: CredentialPolicy
) -> CredentialDecision:
    ws = obs.workspace
    status = ws.status
    namespace, secret_name = credential_secret_ref(ws, policy)
    status = _with(status, credential_secret_name=secret_name)
    ref = ws.spec.credentials_secret_ref
    where = (
        f"Secret {ref.name} key {ref.resolved_key}" if ref is not None else "credentialsSecretRef"
    )

    def finish(
        actions: list[CredentialAction],
        ready: Signal,
        ok: bool,
        *,
        reconciling: Signal | None = None,
        stalled: Signal | None = None,
        requeue: datetime | None = None,
        state: TokenWorkspaceStatus = status,
    ) -> CredentialDecision:
        conditions = summarize(
            ws.status.conditions,
            ready=ok,
            ready_signal=ready,
            reconciling=reconciling,
            stalled=stalled,
            generation=ws.generation,
            now=now,
        )
        final = _with(state, observed_generation=ws.generation, conditions=conditions)
        return CredentialDecision(tuple(actions), final, requeue, usable=ok)

    if not capabilities(ws.spec).needs_credential:
        signal = Signal(reasons.WORKSPACE_READY, "refresh-only mode needs no credential")
        return finish([], signal, True)

    secret = obs.secret
    if secret is not None and held.foreign(secret, ws.uid):
        signal = Signal(
            reasons.SECRET_CONFLICT,
            f"Secret {namespace}/{secret_name} exists and is not this workspace's credential",
        )
        return finish(
            [], signal, False, stalled=signal, requeue=now + policy.timing.recheck_interval
        )

    usable = (
        secret is not None
        and secret.token_id is not None
        and data_intact(ws.uid, secret)
        and names.KEY_REFRESH_TOKEN in secret.data
    )
    current_id = secret.token_id if usable and secret is not None else None
    new_bootstrap = (
        obs.bootstrap_digest is not None and obs.bootstrap_digest != status.bootstrap_digest
    )
    actions: list[CredentialAction] = []
    requeue: list[datetime] = []
    ready_ok = False
    ready = Signal(reasons.CREDENTIALS_MISSING, "")
    stalled: Signal | None = None

    if new_bootstrap:
        assert obs.bootstrap_digest is not None
        actions.append(held.Import(obs.bootstrap_digest, current_id))
        ready = Signal(reasons.IMPORTING, f"using the bootstrap value in {where}")
    elif secret is None or current_id is None:
        message = (
            f"{where} not found and the operator holds no credential"
            if obs.bootstrap_digest is None
            else f"the bootstrap value in {where} was already used and the operator's "
            f"credential Secret {secret_name} is missing or was edited: put a new bootstrap "
            "refresh token there"
        )
        stalled = ready = Signal(reasons.CREDENTIALS_MISSING, message)
    elif status.last_failure_reason in (
        reasons.REFRESH_TOKEN_REJECTED,
        reasons.UNAUTHORIZED,
        reasons.CLIENT_REJECTED,
    ):
        stalled = ready = Signal(
            reasons.UNAUTHORIZED,
            f"the service refused the operator's credential ({status.last_failure_message}); "
            f"put a new bootstrap refresh token in {where}",
        )
    else:
        assert secret is not None
        access_expires = secret.access_token_expires_at
        refresh_expires = secret.refresh_token_expires_at
        describes = (
            status.credential_token_id == current_id
            and status.last_refresh_time is not None
            and access_expires is not None
        )
        refresh_at = now
        if describes and status.last_refresh_time is not None and access_expires is not None:
            refresh_at = next_refresh_time(
                obtained_at=status.last_refresh_time,
                expires_at=access_expires,
                refresh_percent=DEFAULT_REFRESH_PERCENT,
                token_id=current_id,
                policy=policy.timing,
            )
        renew_at = refresh_expires - _renew_before(policy) if refresh_expires is not None else None
        status = _with(
            status,
            credential_token_id=current_id,
            credential_expires_at=refresh_expires,
            credential_renewal_time=renew_at,
            last_refresh_time=status.last_refresh_time if describes else None,
        )
        ready_ok = access_expires is not None and now < access_expires
        ready = (
            Signal(reasons.WORKSPACE_READY, f"acting as {status.user or 'the bootstrap member'}")
            if ready_ok
            else Signal(
                status.last_failure_reason or reasons.ACCESS_TOKEN_EXPIRED,
                status.last_failure_message or "the credential's access token expired",
            )
        )
        if now >= refresh_at or not ready_ok:
            # First: renewing goes through the management API, which needs a valid access token.
            actions.append(held.Refresh(current_id))
        elif renew_at is not None and now >= renew_at:
            actions.append(
                held.Issue(reasons.RENEWAL_DUE, credential_token_name(ws), policy.lifetime_days)
            )
            actions.append(
                held.RetireToken(current_id, held.RetireMode.DISABLE, reasons.RENEWAL_DUE)
            )
        else:
            actions.extend(held.repair(_shape(ws, policy, current_id, refresh_expires), secret))
            requeue.append(refresh_at)
            if renew_at is not None:
                requeue.append(renew_at)

    reconciling: Signal | None = None
    retry_at = _retry_at(ws, policy)
    if actions and retry_at is not None and now < retry_at:
        actions = [a for a in actions if not isinstance(a, held.SERVICE_CALLS)]
        reconciling = Signal(
            status.last_failure_reason or reasons.SERVICE_ERROR,
            f"{status.last_failure_message or 'failed'}; retrying at {rfc3339(retry_at)}",
        )
        requeue.append(retry_at)
    if stalled is not None:
        requeue.append(now + policy.timing.recheck_interval)
    return finish(
        actions,
        ready,
        ready_ok,
        reconciling=reconciling,
        stalled=stalled,
        requeue=min(requeue) if requeue else None,
        state=status,
    )


def may_write_held_credential(obs: CredentialObservation) -> bool:
    """Whether a credential an earlier run could not write may still go to the Secret: never
    over a Secret that is not this workspace's credential. (A workspace being deleted still
    gets it: its deletion disables the operator's own tokens with it.)"""
    return obs.secret is None or not held.foreign(obs.secret, obs.workspace.uid)


def _retry_at(ws: WorkspaceObject, policy: CredentialPolicy) -> datetime | None:
    status = ws.status
    return held.retry_at(status.failed_attempts, status.last_failure_time, ws.uid, policy.timing)


def credential_stored_state(
    obs: CredentialObservation,
    issued: held.IssuedToken,
    policy: CredentialPolicy,
    *,
    bootstrap_digest: str | None = None,
) -> tuple[dict[str, Any], TokenWorkspaceStatus]:
    """The credential Secret to write, first, and the status after a bootstrap, refresh or
    renewal. For a refresh, pass the token id and refresh expiry the Secret already had."""
    ws = obs.workspace
    manifest = build_secret(
        _shape(ws, policy, issued.token_id, issued.refresh_token_expires_at),
        token_data(issued.values),
    )
    user, _ = token_claims(issued.values.access_token)
    status = held.succeeded(
        ws.status,
        _ATTEMPTS,
        user=user or ws.status.user,
        credential_secret_name=credential_secret_ref(ws, policy)[1],
        credential_token_id=issued.token_id,
        credential_expires_at=issued.refresh_token_expires_at,
        last_refresh_time=held.whole(issued.obtained_at),
        bootstrap_digest=bootstrap_digest or ws.status.bootstrap_digest,
    )
    return manifest, status


def credential_failed_state(
    obs: CredentialObservation,
    reason: str,
    message: str,
    now: datetime,
    *,
    consumed_bootstrap_digest: str | None = None,
) -> TokenWorkspaceStatus:
    """After a failed call. A rejected bootstrap value is remembered as used: never retried."""
    status = obs.workspace.status
    digest = consumed_bootstrap_digest or status.bootstrap_digest
    return held.failed(status, _ATTEMPTS, reason, message, now, bootstrap_digest=digest)
