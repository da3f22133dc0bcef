"""One run of an ApiToken's reconcile against the cluster: observe, decide and act, record.

Every run of an ApiToken, its deletion's too, is the scheduler's (`execution.scheduler`),
under the ApiToken's lock (`TokenLocks.for_uid`), so there is one writer per token. The
ApiToken and its managed Secret come from the bodies the last run ended with when no watch
reported a change since, else they are read live; the Namespace from a watch; for provider
apitoken the tokens tagged with the ApiToken's UID are listed when the run may need it, so that
leftovers are swept (docs/architecture.md, "What a run reads"). The run keeps the ApiToken's
finalizer: added before anything can reach the token service, removed once the core releases
the ApiToken being deleted.

When the Secret cannot be written with values just obtained from the service (they stay in the
token's backlog, see `execution.held_token`), the failure is recorded in status before the error
goes up to the scheduler's retry: Reconciling says so at once, and Ready turns False once the
access token the Secret still holds expired."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from pydantic import ValidationError

from apitoken_operator.core import held_token as held
from apitoken_operator.core.apitoken.decide import (
    ApiTokenView,
    Observation,
    WorkspaceView,
    decide,
    failed_state,
)
from apitoken_operator.core.apitoken.invalid_spec import release_invalid
from apitoken_operator.core.bodies import (
    api_token_view,
    invalid_spec_status,
    observed_secret,
    status_of,
)
from apitoken_operator.core.held_token import ServiceToken
from apitoken_operator.core.managed_secret import ObservedSecret, salted_digest
from apitoken_operator.core.schedule import TimingPolicy, stable_fraction
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.names import KEY_ACCESS_TOKEN
from apitoken_operator.crd.resources import (
    ApiTokenStatus,
    ClusterTokenWorkspaceSpec,
    WorkspaceKind,
    status_patch,
)
from apitoken_operator.execution.apitoken import Ports, reconcile_once, service_tokens
from apitoken_operator.execution.held_token import Event
from apitoken_operator.kube.finalizers import Patch, add_patch, patch_api_token, remove_patch
from apitoken_operator.kube.objects import (
    Body,
    SecretValueReader,
    get_api_token,
    get_secret,
    patch_status,
    write_failure_message,
)
from apitoken_operator.kube.workloads import WorkloadRestarter
from apitoken_operator.metrics import TimedManagement
from apitoken_operator.providers.answers import RefreshResult
from apitoken_operator.providers.capabilities import capabilities
from apitoken_operator.providers.errors import ServiceError, Unreachable
from apitoken_operator.reconcilers.workspace import management_for, workspace_access, workspace_key
from apitoken_operator.runtime import Runtime

log = logging.getLogger(__name__)

# A sweep time that makes the next run list (after a failure).
SWEEP_NOW = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Posting:
    """An event to post, and the object it is about."""

    body: Body
    event: Event


@dataclass(frozen=True)
class TokenRun:
    body: Body
    status: ApiTokenStatus
    requeue_at: datetime | None
    # Actions were left undone (rounds exhausted): run again soon.
    more: bool
    released: bool
    postings: tuple[Posting, ...]


class _NoEndpoint:
    async def refresh(self, refresh_token: str) -> RefreshResult:
        del refresh_token
        raise Unreachable("the workspace has no token endpoint")

    async def revoke(self, refresh_token: str) -> bool:
        del refresh_token
        return False


async def run_api_token(rt: Runtime, namespace: str, name: str, uid: str) -> TokenRun | None:
    """None when the ApiToken is gone (or was replaced by another of the same name). Called
    by the scheduler's workers only (`execution.scheduler`), so runs of one ApiToken never
    overlap; the lock keeps them apart from the workspace handlers' reads of the same state.

    The run keeps the ApiToken's finalizer itself (Kopf does not watch ApiTokens): it adds it
    before anything can reach the token service, and once the ApiToken is being deleted and
    the core releases it, removes it before forgetting the ApiToken (a removal that fails is
    retried by the next run, which decides the release again)."""
    async with rt.locks.for_uid(uid):
        body = await _read_api_token(rt, namespace, name, uid)
        unprotected = body is not None and not _protected(body)
        # A spec the models refuse gets no finalizer: no run calls the service for it
        # (`core.apitoken.invalid_spec`).
        if body is not None and not _deleting(body) and not (unprotected and _invalid(body)):
            body = await _with_finalizer(rt, body, namespace, name, uid)
        if body is None or (body.get("metadata") or {}).get("uid") != uid:
            return None
        # Without the finalizer no run ever called the service for it (every run adds it
        # first): the service holds no token tagged with its UID, nothing to list.
        untouched = unprotected and _records_no_token(body)
        return await _run(rt, body, namespace, name, uid, untouched=untouched)


def _protected(body: Body) -> bool:
    return names.FINALIZER in ((body.get("metadata") or {}).get("finalizers") or ())


def _records_no_token(body: Body) -> bool:
    """No token recorded in status (a finalizer removed by hand from an ApiToken holding one
    must not count as untouched)."""
    return not (body.get("status") or {}).get("tokenId")


def _invalid(body: Body) -> bool:
    try:
        api_token_view(body)
    except ValidationError:
        return True
    return False


def _deleting(body: Body) -> bool:
    return bool((body.get("metadata") or {}).get("deletionTimestamp"))


async def _with_finalizer(
    rt: Runtime, body: Body, namespace: str, name: str, uid: str
) -> Body | None:
    """The ApiToken with the operator's finalizer, added now if missing; None when gone."""

    def patch(current: Body) -> Patch | None:
        return None if _deleting(current) else add_patch(current, names.FINALIZER)

    return await _patch_finalizer(rt, body, namespace, name, uid, patch)


async def _release_finalizer(rt: Runtime, body: Body, namespace: str, name: str, uid: str) -> None:
    """Remove the operator's finalizer from the ApiToken being deleted (gone already: done)."""
    await _patch_finalizer(
        rt, body, namespace, name, uid, lambda current: remove_patch(current, names.FINALIZER)
    )


async def _patch_finalizer(
    rt: Runtime,
    body: Body,
    namespace: str,
    name: str,
    uid: str,
    make: Callable[[Body], Patch | None],
) -> Body | None:
    """Apply the finalizer patch `make` gives for the body read (none needed: the body as it
    is); a patch whose test fails (the object changed) is made again from a live read, a few
    times. None when the ApiToken is gone; another of the same name is returned as read."""
    current: Body | None = body
    for _ in range(3):
        if current is None or (current.get("metadata") or {}).get("uid") != uid:
            return current
        patch = make(current)
        if patch is None:
            return current
        rt.check_writes()
        patched = await patch_api_token(rt.kube, namespace, name, patch)
        if patched is not None:
            return patched
        current = await get_api_token(rt.kube, namespace, name)
    raise FinalizerConflict(f"ApiToken {namespace}/{name} changed during each finalizer patch")


class FinalizerConflict(Exception):
    """The ApiToken changed between each read and its finalizer patch: the scheduler retries."""


async def _run(
    rt: Runtime, body: Body, namespace: str, name: str, uid: str, *, untouched: bool = False
) -> TokenRun:
    now = rt.clock()
    rt.metrics.reconciles.labels(kind="ApiToken").inc()
    try:
        view = api_token_view(body)
    except ValidationError as exc:
        return await _run_invalid(rt, body, namespace, name, uid, exc, now)
    spec = view.spec.resolve(namespace, name)
    kind = spec.workspace_kind
    rt.token_workspaces[uid] = workspace_key(
        kind,
        None if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE else namespace,
        spec.workspace_name,
    )
    access = await workspace_access(rt, kind, namespace, spec.workspace_name)
    postings = [Posting(access.body, e) for e in access.events if access.body is not None]
    # Its labels for allowedNamespaces, and whether it is being deleted: from the watch cache.
    ns_state = await rt.namespaces.state(namespace)
    labels: dict[str, str] = {}
    if isinstance(access.spec, ClusterTokenWorkspaceSpec) and access.spec.allowed_namespaces:
        labels = ns_state.labels
    ws_view = WorkspaceView(
        kind=kind,
        name=spec.workspace_name,
        spec=access.spec,
        ready=access.usable,
        message=access.message,
        namespace_labels=labels,
    )
    rt.secret_owners[(namespace, spec.secret_name)] = uid
    management = (
        access.management
        if access.spec is not None and capabilities(access.spec).manages_tokens
        else None
    )
    imports = (
        SecretValueReader(rt.kube, namespace, spec.import_ref.name, spec.import_ref.resolved_key)
        if spec.import_ref is not None
        else None
    )
    # The sweep's list is read when a run may need it (`_sweep_due`); when that is known
    # before the Secret is read, both are read in parallel: a slow service delays the run by
    # one timeout, not two.
    list_now = management is not None and not untouched and _sweep_due(rt, uid, view, now)
    secret_body, listed, import_value = await asyncio.gather(
        _read_secret(rt, uid, namespace, spec.secret_name),
        _list_tokens(management if list_now else None, uid, namespace, name),
        imports.read() if imports is not None else _none(),
    )
    if untouched and management is not None:
        listed = ()  # known without asking: the service holds no token of it yet
    secret = observed_secret(secret_body)
    import_digest = salted_digest(uid, import_value) if import_value else None

    secrets = rt.secret_applier(secret_body)
    ports = Ports(
        secrets=secrets,
        token_endpoint=access.token_endpoint or _NoEndpoint(),
        management=management,
        imports=imports,
        management_for=lambda key: management_for(rt, key, namespace),
        revoker=access.token_endpoint,
        workloads=WorkloadRestarter(rt.kube, gate=rt.check_writes),
    )
    obs = Observation(
        view,
        secret,
        ws_view,
        listed,
        import_digest,
        namespace_terminating=ns_state.terminating,
        client_digest=access.client_digest,
    )
    # A run with more to do than a refresh may create or retire tokens: it sweeps first.
    if management is not None and not (list_now or untouched) and not _routine(obs, now, rt.timing):
        listed = await _list_tokens(management, uid, namespace, name)
        obs = replace(obs, service_tokens=listed)
    backlog = rt.locks.backlog(uid)
    try:
        outcome = await reconcile_once(
            obs,
            ports,
            policy=rt.timing,
            clock=rt.clock,
            retry=rt.write_retry,
            backlog=backlog,
        )
    except Exception as exc:
        rt.swept[uid] = SWEEP_NOW
        if backlog.pending is not None:
            await _record_write_failure(rt, obs, spec.secret_name, exc)
        raise
    if any(e.type == "Warning" for e in outcome.events):
        rt.swept[uid] = SWEEP_NOW  # a failure may have left a token behind: the next run sweeps
    elif listed is not None:
        rt.swept[uid] = now
    elif uid not in rt.swept:
        # This process's first run of a settled ApiToken, at most a refresh (`_sweep_due`):
        # its first sweep comes at a time stable for it within the sweep interval.
        rt.swept[uid] = now - rt.settings.sweep_interval * stable_fraction("sweep", uid)
    final = outcome.decision.status
    patch = status_patch(view.status, final)
    stored = body
    if patch and not outcome.finalizer_released:
        stored = await patch_status(rt.kube, "ApiToken", name, namespace, patch)
    for event in outcome.events:
        postings.append(Posting(body, event))
        if event.type == "Warning":
            rt.metrics.reconcile_errors.labels(kind="ApiToken", reason=event.reason).inc()
        log.info("%s: %s", event.reason, event.message, extra=_where(namespace, name))
    if outcome.finalizer_released:
        await _release_finalizer(rt, body, namespace, name, uid)
        forget(rt, namespace, name, uid, spec.secret_name)
    else:
        held_secret = outcome.observation.secret
        rt.metrics.observe_token(
            namespace,
            name,
            access_expires_at=_access_expiry(held_secret, uid),
            refresh_expires_at=final.refresh_token_expires_at,
        )
        rt.token_bodies.put(uid, stored)
        read = secret_body if secret is not None and not held.foreign(secret, uid) else None
        rt.secret_bodies.put(uid, secrets.written or read)
    return TokenRun(
        body=body,
        status=final,
        requeue_at=outcome.decision.requeue_at,
        more=bool(outcome.decision.actions) and not outcome.finalizer_released,
        released=outcome.finalizer_released,
        postings=tuple(postings),
    )


async def _run_invalid(
    rt: Runtime,
    body: Body,
    namespace: str,
    name: str,
    uid: str,
    error: ValidationError,
    now: datetime,
) -> TokenRun:
    """A spec the models refuse: the status says which fields; being deleted, the ApiToken is
    released when nothing holds it back (`core.apitoken.invalid_spec`)."""
    rt.metrics.reconcile_errors.labels(kind="ApiToken", reason=reasons.INVALID_SPEC).inc()
    deleting = _deleting(body) and _protected(body)
    if deleting and release_invalid(body):
        log.info(
            "released: the spec is not valid and nothing is left to clean up",
            extra=_where(namespace, name),
        )
        await _release_finalizer(rt, body, namespace, name, uid)
        forget(rt, namespace, name, uid, None)
        return TokenRun(body, status_of(body, ApiTokenStatus), None, False, True, ())
    status = invalid_spec_status(body, error, now, deletion_waits=deleting)
    patch = status_patch(status_of(body, ApiTokenStatus), status)
    if patch:
        await patch_status(rt.kube, "ApiToken", name, namespace, patch)
    return TokenRun(body, status, None, False, False, ())


def _access_expiry(secret: ObservedSecret | None, uid: str) -> datetime | None:
    """When the access token the ApiToken's Secret holds expires (None: it holds none)."""
    if secret is None or held.foreign(secret, uid) or KEY_ACCESS_TOKEN not in secret.data:
        return None
    return secret.access_token_expires_at


async def _read_api_token(rt: Runtime, namespace: str, name: str, uid: str) -> Body | None:
    """A run starts from the body the last run ended with, if nothing was reported since
    (`kube.known_bodies`: the ApiToken watch and the Secret watch forget a body on a change);
    else it reads the ApiToken live."""
    rt.token_bodies.begin(uid)
    rt.secret_bodies.begin(uid)
    body = rt.token_bodies.take(uid)
    if body is not None:
        return body
    return await get_api_token(rt.kube, namespace, name)


async def _read_secret(rt: Runtime, uid: str, namespace: str, name: str) -> Body | None:
    """The managed Secret the last run ended with (the Secret watch forgets it on any change
    by others), else live. Only Secrets this ApiToken manages are kept: a foreign one is read
    live on every run, the watch sees only managed ones."""
    body = rt.secret_bodies.take(uid)
    meta = (body or {}).get("metadata") or {}
    if body is not None and meta.get("namespace") == namespace and meta.get("name") == name:
        return body
    return await get_secret(rt.kube, namespace, name)


async def _record_write_failure(
    rt: Runtime, obs: Observation, secret_name: str, exc: Exception
) -> None:
    """Put a failed write of kept values in status (the status subresource is not a Secret,
    so this write usually works). Only the error's code and reason are named (`error_detail`),
    never its message."""
    token = obs.token
    message = write_failure_message(f"Secret {secret_name}", "the values just obtained are", exc)
    now = rt.clock()
    failed = failed_state(obs, reasons.SECRET_WRITE_FAILED, message, now)
    decision = decide(replace(obs, token=replace(token, status=failed)), now, rt.timing)
    patch = status_patch(token.status, decision.status)
    if patch:
        await patch_status(rt.kube, "ApiToken", token.name, token.namespace, patch)
    rt.metrics.reconcile_errors.labels(kind="ApiToken", reason=reasons.SECRET_WRITE_FAILED).inc()


def _sweep_due(rt: Runtime, uid: str, view: ApiTokenView, now: datetime) -> bool:
    """Known before anything else is read: the list is needed on the first run of a new
    ApiToken, after a run that failed (an exception or a Warning event), on a spec change,
    while it is being deleted, and once per sweep interval. A run with more to do than a
    refresh lists anyway (`_routine`), so a crash that left a token behind (it dies between
    the service's answer and the Secret write of a creation or re-issue, whose reason is still
    there on the next run) is swept then. The first run of a settled ApiToken in a new process
    does not list: a restart with 10,000 would list 10,000 times within minutes; it gets a
    sweep time within the interval instead."""
    last = rt.swept.get(uid)
    return (
        (last is None and view.status.token_id is None)
        or (last is not None and now - last >= rt.settings.sweep_interval)
        or view.generation != view.status.observed_generation
        or view.deleting
    )


def _routine(obs: Observation, now: datetime, policy: TimingPolicy) -> bool:
    """Whether the decision without the service's list is at most a refresh: then the list
    could only add leftovers, and only a failed run or another process leaves any."""
    actions = decide(obs, now, policy).actions
    return all(isinstance(a, held.Refresh) for a in actions)


async def _list_tokens(
    management: TimedManagement | None, uid: str, namespace: str, name: str
) -> tuple[ServiceToken, ...] | None:
    """The tokens tagged with the ApiToken's UID, for the sweep; None when not listed."""
    if management is None:
        return None
    try:
        return service_tokens(await management.list_tokens(external_ref=uid))
    except ServiceError as exc:
        log.info("listing tokens failed: %s", exc.message, extra=_where(namespace, name))
        return None


async def _none() -> None:
    return None


def forget(rt: Runtime, namespace: str, name: str, uid: str, secret_name: str | None) -> None:
    rt.metrics.forget_token(namespace, name)
    rt.token_workspaces.pop(uid, None)
    rt.swept.pop(uid, None)
    rt.listed_plans.pop(uid, None)
    rt.token_bodies.forget(uid)
    rt.secret_bodies.forget(uid)
    # Without its Secret's name (the ApiToken is gone unseen), look for what it wrote.
    owned = (
        [(namespace, secret_name)]
        if secret_name is not None
        else [key for key, owner in rt.secret_owners.items() if owner == uid]
    )
    for key in owned:
        if rt.secret_owners.get(key) == uid:
            del rt.secret_owners[key]
            rt.own_writes.forget(key)
    rt.locks.forget(uid)
    rt.scheduler.remove(uid)
    rt.token_refs.pop(uid, None)


def _where(namespace: str, name: str) -> dict[str, str]:
    return {"k8s_namespace": namespace, "k8s_name": name}
