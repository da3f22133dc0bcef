"""Every Kopf registration of the operator, in one registry: decorator, typed kwargs, one call.

ApiTokens: one idempotent run (`reconcilers.apitoken.run_api_token`), run by one scheduler
for all of them (`execution.scheduler`: a due-time queue and a fixed pool of workers,
started by the first ApiToken handler and stopped at cleanup). Create, spec update, a
re-issue request and resume only queue a run (resume spread over a window, so a restart
does not run thousands at once); each run's requeue time sets the next one, and the Secret
watch wakes it early; deletion runs inline through Kopf's finalizer, retried with
TemporaryError until the core releases it.

Workspaces (few): a run on create, spec update and resume, a daemon each for the operator's
credential, and a finalizer that waits until no ApiToken uses the workspace, so their
cleanup can still reach the token service; the credential Secret carries a finalizer of its own
for the same reason (`core.workspace.protection`), released with the workspace's, once the
operator's own tokens in the workspace are disabled.

No handler is registered on Secrets: Kopf would store a Secret's data in its last-handled
annotation. Managed Secrets are watched by `handlers.secret_watch` instead.

Token-service failures are recorded in status by the core and retried at the core's backoff;
Kubernetes API failures of a scheduled run are retried with a per-ApiToken backoff, those of
the deletion handler become kopf.TemporaryError with a backoff delay.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import httpx
import kopf
from lightkube import ApiError
from pydantic import ValidationError

from apitoken_operator.core.apitoken.decide import ApiTokenView
from apitoken_operator.core.apitoken.resume import resume_due, settled
from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.bodies import api_token_view
from apitoken_operator.core.workspace.deletion import DeletionStep, decide_deletion
from apitoken_operator.crd import names
from apitoken_operator.crd.resources import WorkspaceKind
from apitoken_operator.handlers.daemons import keep_running
from apitoken_operator.handlers.memory import glibc_trim, trim_every
from apitoken_operator.handlers.secret_watch import watch_managed_secrets
from apitoken_operator.kube.objects import api_tokens_using
from apitoken_operator.kube.resources import PLURALS
from apitoken_operator.reconcilers.apitoken import Posting, run_api_token
from apitoken_operator.reconcilers.workspace import (
    WorkspaceRun,
    retire_credential,
    run_workspace,
    sync_credential_protection,
)
from apitoken_operator.runtime import LaunchConfig, Runtime

log = logging.getLogger(__name__)

registry = kopf.OperatorRegistry()

GROUP, VERSION = names.GROUP, names.VERSION
APITOKENS = "apitokens"
T = TypeVar("T")
DELETION_RECHECK = timedelta(seconds=15)


# ---------------------------------------------------------------------------------------------
# Operator lifecycle.


def configure(settings: kopf.OperatorSettings, kopf_workers: int = 64) -> None:
    """Kopf's own state lives under our group; only its warnings become Kubernetes events
    (ours are posted explicitly: generated, re-issued, disabled, deleted, failed)."""
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Kopf's own per-object workers (handler calls, its annotation patches): bounded like the
    # scheduler's, so a burst of thousands of watch events is not thousands of concurrent
    # API calls (unbounded, 1,000 ApiTokens applied at once doubled the RSS: docs/benchmarks.md);
    # a worker leaves soon after its object's last event to free its slot.
    settings.queueing.worker_limit = kopf_workers
    settings.queueing.idle_timeout = 0.5
    # Watches are re-established now and then, so a silently dropped one heals.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Inside a Pod: the ServiceAccount; elsewhere: KUBECONFIG (Kopf's own readers)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = cast(LaunchConfig, memo.get("launch") or LaunchConfig())
    configure(settings, config.settings.kopf_workers)
    rt = Runtime.create(config)
    memo["runtime"] = rt
    if config.metrics_port is not None:
        memo["stop_metrics"] = rt.metrics.serve(config.metrics_port)
    watched = list(config.namespaces)
    if watched and rt.settings.namespace not in watched:
        watched.append(rt.settings.namespace)  # ClusterTokenWorkspace credentials live there
    memo["secret_watch"] = asyncio.create_task(watch_managed_secrets(rt, watched))
    interval = config.settings.memory_trim_interval.total_seconds()
    memo["memory_trim"] = asyncio.create_task(trim_every(interval, glibc_trim()))


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for key in ("secret_watch", "memory_trim"):
        task = memo.get(key)
        if isinstance(task, asyncio.Task):
            task.cancel()
    stop = memo.get("stop_metrics")
    if callable(stop):
        stop()
    rt = memo.get("runtime")
    if isinstance(rt, Runtime):
        await rt.scheduler.stop()  # the runs in progress finish first
        await rt.aclose()
    # Kopf's stop-flag checker, cancelled when the operator stops for another reason (SIGTERM),
    # leaves its task waiting on the flag running; Kopf then waits 5 s for that "hung" task
    # before it returns and the Lease can be released. Setting the flag ends the wait at once.
    flag = memo.get("stop_flag")
    if isinstance(flag, asyncio.Event):
        flag.set()


def _runtime(memo: kopf.Memo) -> Runtime:
    return cast(Runtime, memo["runtime"])


def _backoff(rt: Runtime, attempt: int) -> float:
    delay = backoff_delay(
        attempt, base=rt.timing.backoff_base, cap=rt.timing.backoff_cap, jitter=0.5
    )
    return delay.total_seconds()


async def _kube_call(rt: Runtime, retry: int | None, call: Awaitable[T]) -> T:
    """Shield the run (a refresh is never cut off before its write) and map Kubernetes API
    failures to a TemporaryError with backoff."""
    try:
        return await asyncio.shield(call)
    except ApiError as exc:
        code = exc.status.code
        raise kopf.TemporaryError(
            f"Kubernetes API error {code} {exc.status.reason}",
            delay=_backoff(rt, (retry or 0) + 1),
        ) from None
    except httpx.HTTPError as exc:
        raise kopf.TemporaryError(
            f"Kubernetes API unreachable ({type(exc).__name__})",
            delay=_backoff(rt, (retry or 0) + 1),
        ) from None


def _post(postings: tuple[Posting, ...]) -> None:
    for p in postings:
        kopf.event(
            cast(Any, p.body), type=p.event.type, reason=p.event.reason, message=p.event.message
        )


def _ids(namespace: str | None, name: str | None, uid: str | None) -> tuple[str, str, str]:
    if not (namespace and name and uid):
        raise kopf.PermanentError("an ApiToken without namespace, name or uid")
    return namespace, name, uid


# ---------------------------------------------------------------------------------------------
# ApiTokens.


def _schedule(
    memo: kopf.Memo,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    at: datetime | None = None,
    *,
    fresh: bool = False,
) -> None:
    """Handlers only queue the ApiToken's run (at `at`, default now): the scheduler's workers
    run it, at most `token_workers` at once. A `fresh` run (a new ApiToken, a spec change, a
    re-issue request) waits while refreshes of existing tokens are due (`core.due_queue`).
    A handler's run reads the ApiToken and its Secret live: the spec it was called for may be
    newer than the body the last run ended with (docs/architecture.md)."""
    rt = _runtime(memo)
    u = _ids(namespace, name, uid)[2]
    rt.token_bodies.invalidate(u)
    rt.secret_bodies.invalidate(u)
    _queue(rt, namespace, name, uid, at, fresh=fresh)


def _queue(
    rt: Runtime,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    at: datetime | None,
    *,
    fresh: bool = False,
) -> None:
    ns, n, u = _ids(namespace, name, uid)
    _start_scheduler(rt)
    rt.token_refs[u] = (ns, n)
    rt.scheduler.add(u, at, fresh=fresh)


def _start_scheduler(rt: Runtime) -> None:
    if not rt.scheduler.started:
        # Started from a handler, not at start-up: the workers inherit the context Kopf sets
        # for handlers only (its event queue), so `kopf.event` works in their runs.
        rt.scheduler.start(lambda key: _scheduled_run(rt, key), lambda key: _token_name(rt, key))


async def _scheduled_run(rt: Runtime, uid: str) -> datetime | None:
    """One run for the scheduler: when it is due again, None once the ApiToken is gone or
    being deleted (the deletion handler runs it from then on)."""
    ref = rt.token_refs.get(uid)
    if ref is None:
        return None
    result = await run_api_token(rt, ref[0], ref[1], uid)
    if result is None or result.released:
        rt.token_refs.pop(uid, None)
        rt.listed_plans.pop(uid, None)
        return None
    _post(result.postings)
    if result.more:
        return rt.clock()
    return result.requeue_at or rt.clock() + rt.timing.recheck_interval


def _token_name(rt: Runtime, uid: str) -> str:
    ns, n = rt.token_refs.get(uid, ("?", "?"))
    return f"ApiToken {ns}/{n}"


@kopf.on.create(GROUP, VERSION, APITOKENS, registry=registry)
async def apitoken_created(
    namespace: str | None,
    name: str | None,
    uid: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    _schedule(memo, namespace, name, uid, fresh=True)
    # Its first run starts from the body Kopf just saw (nothing this process has is newer;
    # a change after it wakes the run, which then reads live): one GET fewer per new ApiToken.
    _runtime(memo).token_bodies.seed(uid or "", dict(body))


@kopf.on.update(GROUP, VERSION, APITOKENS, field="spec", registry=registry)
async def apitoken_spec_changed(
    namespace: str | None, name: str | None, uid: str | None, memo: kopf.Memo, **_: Any
) -> None:
    _schedule(memo, namespace, name, uid, fresh=True)


@kopf.on.event(
    GROUP,
    VERSION,
    APITOKENS,
    annotations={names.ANNOTATION_REISSUE: kopf.PRESENT},
    registry=registry,
)
async def apitoken_reissue_requested(
    namespace: str | None,
    name: str | None,
    uid: str | None,
    annotations: kopf.Annotations,
    status: kopf.Status,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    # Kopf's diffs leave out annotations under its storage prefix (ours, apitoken.dev/), so an
    # update handler never sees apitoken.dev/reissue: watch events do. A value not yet handled
    # (status.lastReissueRequest) queues a run now, which re-issues.
    value = annotations.get(names.ANNOTATION_REISSUE)
    if value and value != status.get("lastReissueRequest"):
        logger.info("re-issue requested (%s): running now", names.ANNOTATION_REISSUE)
        _schedule(memo, namespace, name, uid, fresh=True)


@kopf.on.resume(GROUP, VERSION, APITOKENS, registry=registry)
async def apitoken_resumed(
    namespace: str | None,
    name: str | None,
    uid: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    # Found at start-up: spread over a window, never after a planned refresh or re-issue
    # (`core.apitoken.resume`). The first run starts from the bodies listed at start-up: the
    # ApiToken Kopf listed, and the Secret the Secret watch listed (no GET of either).
    rt = _runtime(memo)
    u = uid or ""
    raw = dict(body)
    try:
        view: ApiTokenView | None = api_token_view(raw)
    except ValidationError:
        view = None  # its run records why
    calm = view is not None and settled(view)
    listed = rt.listed_plans.pop(u, None)
    if calm and listed is not None:
        # The Secret watch's listing queued its first run at the Secret's plan already (and it
        # may have run since): Kopf's body only saves that run a GET.
        _start_scheduler(rt)
        rt.token_bodies.seed(u, raw)
        return
    window = rt.timing.recheck_interval
    if not calm:
        window = min(rt.settings.resume_spread, window)
    at = resume_due(
        u,
        rt.clock(),
        window=window,
        planned=(listed, view.status.renewal_time if view else None),
    )
    _queue(rt, namespace, name, uid, at)
    rt.token_bodies.seed(u, raw)


@kopf.on.delete(GROUP, VERSION, APITOKENS, registry=registry)
async def apitoken_deleted(
    namespace: str | None, name: str | None, uid: str | None, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    # Runs inline under Kopf's finalizer and retries; the scheduler stops running the
    # ApiToken once it sees the deletion (the lock keeps the two apart meanwhile).
    rt = _runtime(memo)
    ns, n, u = _ids(namespace, name, uid)
    result = await _kube_call(rt, retry, run_api_token(rt, ns, n, u, deleting=True))
    if result is None or result.released:
        return
    _post(result.postings)
    delay = rt.timing.recheck_interval
    if result.requeue_at is not None:
        delay = max(result.requeue_at - rt.clock(), timedelta(seconds=1))
    # Kopf sees no change of apitoken.dev/ annotations (see above): look again often enough
    # that apitoken.dev/abandon takes effect soon. The core still waits out its backoff
    # before calling the service again.
    delay = min(delay, DELETION_RECHECK)
    condition = result.status.condition("Reconciling") or result.status.condition("Ready")
    message = condition.message if condition is not None else "cleanup pending"
    raise kopf.TemporaryError(message, delay=delay.total_seconds())


async def _daemon(rt: Runtime, uid: str, step: Callable[[], Awaitable[Any]], what: str) -> None:
    wake = rt.wakers.setdefault(uid, asyncio.Event())
    try:
        await keep_running(
            step,
            wake,
            clock=rt.clock,
            idle=rt.timing.recheck_interval,
            error_backoff=lambda attempt: _backoff(rt, attempt),
            what=what,
        )
    finally:
        rt.wakers.pop(uid, None)


# ---------------------------------------------------------------------------------------------
# Workspaces: the operator's own credential.


async def _reconcile_workspace(
    memo: kopf.Memo, kind: WorkspaceKind, namespace: str | None, name: str | None, retry: int
) -> WorkspaceRun | None:
    rt = _runtime(memo)
    if not name:
        raise kopf.PermanentError("a workspace without a name")
    result = await _kube_call(rt, retry, run_workspace(rt, kind, namespace, name))
    if result is not None and result.outcome is not None:
        _post(tuple(Posting(result.body, e) for e in result.outcome.events))
    return result


def _workspace_handlers(plural: str, kind: WorkspaceKind) -> None:
    """The same handlers for both workspace kinds."""

    @kopf.on.create(GROUP, VERSION, plural, registry=registry, id=f"{plural}-created")
    @kopf.on.update(GROUP, VERSION, plural, field="spec", registry=registry, id=f"{plural}-spec")
    @kopf.on.resume(GROUP, VERSION, plural, registry=registry, id=f"{plural}-resumed")
    async def changed(
        namespace: str | None,
        name: str | None,
        uid: str | None,
        retry: int,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        await _reconcile_workspace(memo, kind, namespace, name, retry)
        _runtime(memo).wake(uid)

    @kopf.on.delete(GROUP, VERSION, plural, registry=registry, id=f"{plural}-deleted")
    async def deleted(
        namespace: str | None,
        name: str | None,
        uid: str | None,
        retry: int,
        annotations: kopf.Annotations,
        memo: kopf.Memo,
        **_: Any,
    ) -> None:
        # Decided by the core (`core.workspace.deletion`); each step waits on the one before.
        rt = _runtime(memo)
        n, u = name or "", uid or ""
        abandon = annotations.get(names.ANNOTATION_ABANDON) == "true"
        users = await _kube_call(rt, retry, api_tokens_using(rt.kube, kind, n, namespace))
        step = decide_deletion(users, None, abandon=abandon)
        if step.step is DeletionStep.WAIT_FOR_USERS:
            # ApiTokens being deleted still need this workspace's credential to clean up.
            delay = max(rt.timing.backoff_base.total_seconds(), 1.0)
            raise kopf.TemporaryError(step.message, delay=delay)
        retired = await _kube_call(rt, retry, retire_credential(rt, kind, namespace, n, u))
        step = decide_deletion(users, retired, abandon=abandon)
        if step.step is DeletionStep.WAIT_FOR_RETIREMENT:
            delay = min(_backoff(rt, retry + 1), DELETION_RECHECK.total_seconds())
            raise kopf.TemporaryError(step.message, delay=delay)
        # Then the credential Secret may go (its finalizer held it for the ApiTokens).
        release = sync_credential_protection(rt, kind, namespace, n, u, workspace_deleting=True)
        await _kube_call(rt, retry, release)

    @kopf.daemon(
        GROUP, VERSION, plural, cancellation_timeout=10, registry=registry, id=f"{plural}-daemon"
    )
    async def daemon(
        namespace: str | None, name: str | None, uid: str | None, memo: kopf.Memo, **_: Any
    ) -> None:
        rt = _runtime(memo)
        if not (name and uid):
            return

        async def step() -> Any:
            result = await run_workspace(rt, kind, namespace, name)
            if result is None or result.outcome is None:
                return None
            _post(tuple(Posting(result.body, e) for e in result.outcome.events))
            decision = result.outcome.decision
            return rt.clock() if decision.actions else decision.requeue_at

        await _daemon(rt, uid, step, f"{kind.value} {namespace or ''}/{name}")


for _kind, _plural in PLURALS.items():
    _workspace_handlers(_plural, _kind)

__all__ = ["configure", "registry"]
