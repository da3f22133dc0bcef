"""One run of a workspace's credential reconcile against the cluster, and what ApiTokens need
from a workspace (its spec, whether the operator's credential works, the clients).

The run is idempotent and cheap when nothing is due (three GETs). ApiToken runs reuse the last
run's answer while its credential needs nothing (`rt.workspace_runs`, until the decision's
requeue time: the access token is valid past it by the refresh margin), so a thousand
ApiTokens of one workspace neither read the workspace and its Secrets again nor queue behind
the workspace's lock; when it is due they run it themselves and act with a fresh credential,
whatever the workspace daemon's timing. Every run of the workspace (its handlers, its daemon
woken by a change of its credential Secret) replaces that answer. It also
keeps the credential Secret's finalizer in step (`core.workspace.protection`); a workspace's
deletion disables the operator's own tokens there (`retire_credential`) before letting go.
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from apitoken_operator.core.bodies import (
    invalid_spec,
    observed_secret,
    secret_value,
    status_of,
    workspace_object,
    workspace_spec,
)
from apitoken_operator.core.managed_secret import salted_digest
from apitoken_operator.core.workspace.credential import (
    CredentialObservation,
    credential_failed_state,
    credential_secret_location,
    credential_secret_ref,
    decide_credential,
)
from apitoken_operator.core.workspace.deletion import (
    Retirement,
    credential_tokens_to_retire,
    retirement_waits,
)
from apitoken_operator.core.workspace.protection import (
    ProtectionChange,
    finalizer_patch,
    needs_user_count,
    protection_change,
    protection_due,
    protection_view,
    protects,
)
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.names import KEY_ACCESS_TOKEN
from apitoken_operator.crd.resources import (
    TokenWorkspaceSpec,
    TokenWorkspaceStatus,
    WorkspaceKind,
    status_patch,
)
from apitoken_operator.execution.apitoken import service_tokens
from apitoken_operator.execution.held_token import Event, ManagementApi, WriteRetry
from apitoken_operator.execution.workspace import (
    CredentialOutcome,
    CredentialPorts,
    reconcile_credential_once,
)
from apitoken_operator.kube.objects import (
    Body,
    SecretValueReader,
    api_tokens_using,
    get_secret,
    get_workspace,
    patch_secret_metadata,
    patch_status,
    write_failure_message,
)
from apitoken_operator.metrics import TimedManagement, TimedRefresh
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.capabilities import capabilities
from apitoken_operator.providers.errors import NotFound, ServiceError
from apitoken_operator.providers.oauth2 import ClientAuth, RequestShape, TokenEndpointClient
from apitoken_operator.runtime import Runtime

log = logging.getLogger(__name__)


def workspace_key(kind: WorkspaceKind, namespace: str | None, name: str) -> str:
    return f"{kind.value}/{namespace or ''}/{name}"


@dataclass(frozen=True)
class WorkspaceRun:
    body: Body
    # None for a spec that does not validate, or (for an ApiToken run) when the credential
    # Secret could not be written
    outcome: CredentialOutcome | None
    usable: bool
    message: str


class _NoBootstrap:
    async def read(self) -> str | None:
        return None


@dataclass(frozen=True)
class ClientSecret:
    """The client secret a workspace's oauth2 settings name, read live, and a digest of those
    settings with it (what an ApiToken remembers of settings the provider rejected)."""

    value: str | None = field(repr=False)
    source: str
    digest: str


def token_endpoint(
    rt: Runtime, spec: TokenWorkspaceSpec, *, count: bool, client: ClientSecret | None = None
) -> TimedRefresh:
    """The workspace's token endpoint (and revocation endpoint) client, authenticated with
    `client`'s secret when the oauth2 settings ask for one."""
    settings = spec.oauth2
    if settings is None:
        inner = TokenEndpointClient(
            rt.http_for(spec.ca_bundle), token_endpoint=spec.token_endpoint or ""
        )
        return TimedRefresh(inner, rt.metrics, count=count, gate=rt.check_writes)
    auth = ClientAuth(
        client_id=settings.client_id,
        method=settings.resolved_client_auth_method,
        client_secret=client.value if client is not None else None,
        secret_source=client.source if client is not None else "clientSecretRef",
    )
    shape = RequestShape(
        scope=settings.scope,
        extra_params=dict(settings.extra_params),
        default_lifetime=settings.resolved_default_lifetime,
    )
    inner = TokenEndpointClient(
        rt.http_for(spec.ca_bundle),
        token_endpoint=settings.token_endpoint,
        auth=auth,
        shape=shape,
        issuer=settings.issuer,
        revocation_endpoint=settings.revocation_endpoint,
        discovery=rt.discovery,
    )
    return TimedRefresh(inner, rt.metrics, count=count, gate=rt.check_writes)


async def read_client_secret(
    rt: Runtime, kind: WorkspaceKind, namespace: str | None, uid: str, spec: TokenWorkspaceSpec
) -> ClientSecret | None:
    """None without oauth2 settings. The Secret lives in the workspace's namespace, or the
    operator's for a ClusterTokenWorkspace."""
    settings = spec.oauth2
    if settings is None:
        return None
    value: str | None = None
    source = "no clientSecretRef"
    ref = settings.client_secret_ref
    if ref is not None:
        where = (
            rt.settings.namespace
            if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE
            else (namespace or "")
        )
        value = secret_value(await get_secret(rt.kube, where, ref.name), ref.resolved_key)
        source = f"Secret {where}/{ref.name} key {ref.resolved_key}"
    settings_json = json.dumps(settings.to_json(), sort_keys=True)
    digest = salted_digest(uid, f"{settings_json}\x00{value or ''}")
    return ClientSecret(value, source, digest)


def management_api(rt: Runtime, spec: TokenWorkspaceSpec, bearer: str) -> TimedManagement:
    async def source() -> str:
        return bearer

    inner = TokenServiceClient(
        rt.http_for(spec.ca_bundle),
        base_url=spec.url or "",
        workspace=spec.workspace or "",
        bearer=source,
    )
    return TimedManagement(inner, rt.metrics, gate=rt.check_writes)


class _WriteAgain(Exception):
    """The credential Secret could not be written; its values are in the backlog."""


async def run_workspace(
    rt: Runtime,
    kind: WorkspaceKind,
    namespace: str | None,
    name: str,
    *,
    sync_protection: bool = True,
    for_api_token: bool = False,
) -> WorkspaceRun | None:
    """Bring the operator's credential in this workspace up to date; None if it is gone.
    `sync_protection=False` leaves the credential Secret's finalizer as it is (the deletion
    handler releases it itself, after it has retired the credential).

    A credential that could not be written stays in the workspace's backlog, and every run,
    whoever asks for it, first writes that under the lock (one writer). The lock is held for one
    write attempt at a time, not through the whole retry budget: between attempts (spaced as
    `rt.write_retry` says) ApiToken runs go on. An ApiToken run (`for_api_token`) makes one
    attempt and, if it fails, goes on without the management API (refreshes need none) instead
    of failing; the workspace's own runs retry and finally raise for Kopf's retry. The failure
    is recorded in the workspace's status (SecretWriteFailed)."""
    key = workspace_key(kind, namespace, name)
    retry = rt.write_retry
    attempts = 1 if for_api_token else retry.attempts
    delay = retry.first_delay.total_seconds()
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            async with rt.workspace_locks.for_uid(key):
                # ApiToken runs that queued here behind the one that ran take its answer.
                kept = _remembered(rt, key) if for_api_token else None
                if kept is not None:
                    return kept
                # A failed run (its values kept in the backlog) leaves nothing to reuse.
                rt.workspace_runs.pop(key, None)
                run = await _run_locked(
                    rt,
                    kind,
                    namespace,
                    name,
                    sync_protection=sync_protection,
                    last=last,
                    degrade=for_api_token,
                )
                _remember(rt, key, run)
                return run
        except _WriteAgain:
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("the last attempt returns or raises")  # pragma: no cover


async def _run_locked(
    rt: Runtime,
    kind: WorkspaceKind,
    namespace: str | None,
    name: str,
    *,
    sync_protection: bool,
    last: bool,
    degrade: bool,
) -> WorkspaceRun | None:
    key = workspace_key(kind, namespace, name)
    body = await get_workspace(rt.kube, kind, name, namespace)
    if body is None:
        return None
    try:
        ws = workspace_object(kind, body)
    except ValidationError as exc:
        message = await _report_invalid_spec(rt, kind, namespace, name, body, exc)
        return WorkspaceRun(body, None, False, message)
    policy = rt.credential_policy
    cred_ns, cred_name = credential_secret_ref(ws, policy)
    secret_body = await get_secret(rt.kube, cred_ns, cred_name)
    secret = observed_secret(secret_body)
    ref = ws.spec.credentials_secret_ref
    bootstrap: Any = _NoBootstrap()
    digest = None
    if ref is not None:
        ref_ns = getattr(ref, "namespace", None) or ws.namespace or policy.operator_namespace
        bootstrap = SecretValueReader(rt.kube, ref_ns, ref.name, ref.resolved_key)
        value = await bootstrap.read()
        digest = salted_digest(ws.uid, value) if value else None
    spec = ws.spec
    ports = CredentialPorts(
        secrets=rt.secret_applier(secret_body),
        token_endpoint=token_endpoint(rt, spec, count=False),
        bootstrap=bootstrap,
        management_with=lambda bearer: management_api(rt, spec, bearer),
    )
    obs = CredentialObservation(ws, secret, digest)
    backlog = rt.workspace_locks.backlog(key)
    try:
        outcome = await reconcile_credential_once(
            obs, ports, policy=policy, clock=rt.clock, retry=_ONE_ATTEMPT, backlog=backlog
        )
    except Exception as exc:
        if backlog.pending is None:
            raise
        if not last:
            raise _WriteAgain from None
        message = await _record_write_failure(rt, obs, cred_name, exc)
        if not degrade:
            raise
        log.warning("credential Secret not written: %s", message, extra={"workspace": key})
        rt.wake(ws.uid)  # the workspace's daemon retries the write soon
        return WorkspaceRun(body, None, False, message)
    patch = status_patch(ws.status, outcome.decision.status)
    if patch:
        await patch_status(rt.kube, kind.value, name, namespace, patch)
    deleting = bool((body.get("metadata") or {}).get("deletionTimestamp"))
    # The Secret as read before the run says whether to look again; the credential writes
    # never touch the finalizer, so only a Secret the run just wrote needs a second look.
    written = outcome.observation.secret is not secret
    view = protection_view(secret_body, ws.uid)
    # Once the workspace or its namespace is being deleted only the workspace's deletion
    # handler may let the credential go, after it disabled the operator's own tokens
    # (`retire_credential`): a daemon run that saw the last ApiToken leave released it first
    # and the namespace's deletion took the Secret before the retirement could use it (seen
    # in CI, the token stayed active). The namespace's deletion may mark the Secret before
    # the workspace, hence the namespace's state too.
    if (
        sync_protection
        and not deleting
        and protects(kind)
        and protection_due(view, deleting, written=written)
        and not (await rt.namespaces.state(ws.namespace or "")).terminating
    ):
        await sync_credential_protection(
            rt, kind, ws.namespace, name, ws.uid, workspace_deleting=False
        )
    ready = outcome.decision.status.condition("Ready")
    usable = outcome.decision.usable
    for event in outcome.events:
        if event.type == "Warning":
            rt.metrics.reconcile_errors.labels(kind=kind.value, reason=event.reason).inc()
    if rt.workspace_usable.get(key) != usable:
        log.info(
            "workspace credential usable=%s",
            usable,
            extra={"workspace": key, "reason": ready.reason if ready else None},
        )
        rt.workspace_usable[key] = usable
        if usable:
            for uid, ws_key in list(rt.token_workspaces.items()):
                if ws_key == key:
                    rt.wake(uid)
    return WorkspaceRun(body, outcome, usable, ready.message if ready else "")


def _remember(rt: Runtime, key: str, run: WorkspaceRun | None) -> None:
    """Keep a run's answer for the ApiToken runs while the credential needs nothing."""
    outcome = run.outcome if run is not None else None
    if run is None or outcome is None or outcome.decision.actions:
        rt.workspace_runs.pop(key, None)
        return
    until = rt.clock() + rt.timing.recheck_interval
    if outcome.decision.requeue_at is not None:
        until = min(until, outcome.decision.requeue_at)
    rt.workspace_runs[key] = (replace(run, outcome=replace(outcome, events=())), until)


def _remembered(rt: Runtime, key: str) -> WorkspaceRun | None:
    kept = rt.workspace_runs.get(key)
    if kept is None or rt.clock() >= kept[1]:
        return None
    run: WorkspaceRun = kept[0]
    return run


# Under the lock a run makes one write attempt; `run_workspace` spaces the retries outside it.
_ONE_ATTEMPT = WriteRetry(attempts=1)


async def _record_write_failure(
    rt: Runtime, obs: CredentialObservation, secret_name: str, exc: Exception
) -> str:
    """Put a failed write of a kept credential in the workspace's status (Reconciling says so;
    Ready stays True while the access token the Secret holds is valid); the error's code and
    reason only, never its message. Returns the message."""
    ws = obs.workspace
    secret = f"credential Secret {secret_name}"
    message = write_failure_message(secret, "the credential just obtained is", exc)
    now = rt.clock()
    failed = credential_failed_state(obs, reasons.SECRET_WRITE_FAILED, message, now)
    failed_obs = replace(obs, workspace=replace(ws, status=failed))
    decision = decide_credential(failed_obs, now, rt.credential_policy)
    patch = status_patch(ws.status, decision.status)
    if patch:
        await patch_status(rt.kube, ws.kind.value, ws.name, ws.namespace, patch)
    rt.metrics.reconcile_errors.labels(kind=ws.kind.value, reason=reasons.SECRET_WRITE_FAILED).inc()
    return message


async def sync_credential_protection(
    rt: Runtime,
    kind: WorkspaceKind,
    namespace: str | None,
    name: str,
    uid: str,
    *,
    workspace_deleting: bool,
) -> None:
    """Bring the finalizer apitoken.dev/credential-in-use on the workspace's credential Secret
    in step (see `core.workspace.protection`), from a live read of the Secret. For a workspace being
    deleted that no ApiToken uses any more this lets the Secret go (garbage collection or the
    namespace's deletion then removes it)."""
    if not protects(kind):
        return
    cred_ns, cred_name = credential_secret_location(kind, namespace, name, rt.credential_policy)
    view = protection_view(await get_secret(rt.kube, cred_ns, cred_name), uid)
    users = None
    if needs_user_count(view, workspace_deleting=workspace_deleting):
        users = len(await api_tokens_using(rt.kube, kind, name, namespace))
    change = protection_change(view, workspace_deleting=workspace_deleting, users=users)
    if change is None or view.resource_version is None:
        return
    operations = finalizer_patch(view, change)
    written = await patch_secret_metadata(rt.kube, cred_ns, cred_name, operations)
    if written is not None:
        rt.note_written(cred_ns, cred_name, written)  # the Secret watch need not wake anyone
        log.info(
            "credential Secret %s: finalizer %s %s",
            cred_name,
            names.FINALIZER_CREDENTIAL_IN_USE,
            "added" if change is ProtectionChange.ADD else "released",
            extra={"workspace": workspace_key(kind, namespace, name)},
        )


async def retire_credential(
    rt: Runtime, kind: WorkspaceKind, namespace: str | None, name: str, uid: str
) -> Retirement:
    """For a workspace being deleted that no ApiToken uses any more: disable the operator's own
    tokens there (`credential_tokens_to_retire`), with a freshly refreshed credential."""
    run = await run_workspace(rt, kind, namespace, name, sync_protection=False)
    if run is None or run.outcome is None:
        return Retirement(True, "no credential")
    spec = workspace_spec(kind, run.body)
    if not capabilities(spec).needs_credential:
        return Retirement(True, "refresh-only mode holds no credential")
    secret = run.outcome.observation.secret
    bearer = secret.data.get(KEY_ACCESS_TOKEN) if secret is not None else None
    if not run.usable or not bearer or secret is None:
        ready = run.outcome.decision.status.condition("Ready")
        waits = retirement_waits(ready.reason if ready is not None else None)
        return Retirement(not waits, run.message or "no working credential")
    api = management_api(rt, spec, bearer)
    try:
        tagged = service_tokens(await api.list_tokens(external_ref=uid))
        retired = credential_tokens_to_retire(secret.token_id, tagged)
        for token_id in retired:
            try:
                await api.disable_token(token_id)
            except NotFound:
                pass
    except ServiceError as exc:
        return Retirement(not retirement_waits(exc.reason), exc.message)
    log.info(
        "workspace deleted: disabled the operator's own token(s) %s",
        ", ".join(retired),
        extra={"workspace": workspace_key(kind, namespace, name)},
    )
    return Retirement(True, f"disabled {len(retired)} token(s)")


async def _report_invalid_spec(
    rt: Runtime,
    kind: WorkspaceKind,
    namespace: str | None,
    name: str,
    body: Body,
    error: ValidationError,
) -> str:
    """Ready=False, Stalled=True, reason InvalidSpec, naming the fields (never values)."""
    old = status_of(body, TokenWorkspaceStatus)
    new = invalid_spec(body, error, rt.clock(), TokenWorkspaceStatus)
    ready = new.condition("Ready")
    message = ready.message if ready is not None else "spec is not valid"
    patch = status_patch(old, new)
    if patch:
        await patch_status(rt.kube, kind.value, name, namespace, patch)
    return message


@dataclass(frozen=True)
class WorkspaceAccess:
    """What an ApiToken run needs from its workspace."""

    body: Body | None
    spec: TokenWorkspaceSpec | None
    usable: bool
    message: str
    management: TimedManagement | None
    token_endpoint: TimedRefresh | None
    events: tuple[Event, ...] = ()
    # Refresh-only mode: digest of the client settings and secret in use (see ClientSecret).
    client_digest: str | None = None


async def workspace_access(
    rt: Runtime, kind: WorkspaceKind, namespace: str | None, name: str
) -> WorkspaceAccess:
    where = None if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE else namespace
    run = _remembered(rt, workspace_key(kind, where, name))
    if run is None:
        run = await run_workspace(rt, kind, where, name, for_api_token=True)
    if run is None:
        return WorkspaceAccess(None, None, False, "not found", None, None)
    try:
        spec = workspace_spec(kind, run.body)
    except ValidationError:
        return WorkspaceAccess(run.body, None, False, run.message, None, None)
    events = run.outcome.events if run.outcome is not None else ()
    uid = str((run.body.get("metadata") or {}).get("uid") or "")
    client = await read_client_secret(rt, kind, where, uid, spec)
    endpoint = token_endpoint(rt, spec, count=True, client=client)
    if not capabilities(spec).needs_credential:
        digest = client.digest if client is not None else None
        return WorkspaceAccess(run.body, spec, True, "", None, endpoint, events, digest)
    management = None
    if run.usable and run.outcome is not None:
        secret = run.outcome.observation.secret
        bearer = secret.data.get(KEY_ACCESS_TOKEN) if secret is not None else None
        if bearer:
            management = management_api(rt, spec, bearer)
    return WorkspaceAccess(
        run.body, spec, management is not None, run.message, management, endpoint, events
    )


async def management_for(rt: Runtime, workspace: str, namespace: str) -> ManagementApi | None:
    """The management API of a workspace named "Kind/name" (for tokens left in a workspace
    an ApiToken moved away from)."""
    kind_text, _, name = workspace.partition("/")
    try:
        kind = WorkspaceKind(kind_text)
    except ValueError:
        return None
    access = await workspace_access(rt, kind, namespace, name)
    return access.management


__all__ = [
    "WorkspaceAccess",
    "WorkspaceRun",
    "management_for",
    "retire_credential",
    "run_workspace",
    "sync_credential_protection",
    "workspace_access",
    "workspace_key",
]
