"""Every Kopf registration of the operator, in one registry: decorator, typed kwargs, one call.

Kopf serves the workspaces and the operator's lifecycle (start-up, login, cleanup, liveness).
ApiTokens are not Kopf's: one watch of the operator's own (`handlers.apitoken_watch`) queues
their runs in one scheduler (`execution.scheduler`: a due-time queue and a fixed pool of
workers, started at start-up and stopped at cleanup); each run's requeue time sets the next
one, the Secret watch wakes it early, and the run keeps the ApiToken's finalizer, which has
the name Kopf gives the workspaces' (docs/architecture.md, "One scheduler").

Workspaces (few): a run on create, spec update and resume, a daemon each for the operator's
credential, and a finalizer that waits until no ApiToken uses the workspace, so their
cleanup can still reach the token service; the credential Secret carries a finalizer of its own
for the same reason (`core.workspace.protection`), released with the workspace's, once the
operator's own tokens in the workspace are disabled.

No handler is registered on Secrets: Kopf would store a Secret's data in its last-handled
annotation. Managed Secrets are watched by `handlers.secret_watch` instead.

Token-service failures are recorded in status by the core and retried at the core's backoff;
Kubernetes API failures of an ApiToken run are retried with a per-ApiToken backoff, those of
a workspace handler become kopf.TemporaryError with a backoff delay. Every event the operator
posts goes through one poster (`kube.events`), Kopf's own warnings aside.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import httpx
import kopf
from lightkube import ApiError

from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.workspace.deletion import DeletionStep, decide_deletion
from apitoken_operator.crd import names
from apitoken_operator.crd.resources import WorkspaceKind
from apitoken_operator.handlers.apitoken_watch import (
    post,
    scheduled_run,
    token_name,
    watch_api_tokens,
)
from apitoken_operator.handlers.daemons import keep_running
from apitoken_operator.handlers.memory import glibc_trim, trim_every
from apitoken_operator.handlers.secret_watch import watch_managed_secrets
from apitoken_operator.kube.objects import api_tokens_using
from apitoken_operator.kube.resources import PLURALS
from apitoken_operator.reconcilers.apitoken import Posting
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
    rt.scheduler.start(lambda key: scheduled_run(rt, key), lambda key: token_name(rt, key))
    memo["events"] = asyncio.create_task(rt.events.run())
    memo["secret_watch"] = asyncio.create_task(watch_managed_secrets(rt, watched))
    memo["apitoken_watch"] = asyncio.create_task(watch_api_tokens(rt, config.namespaces))
    interval = config.settings.memory_trim_interval.total_seconds()
    memo["memory_trim"] = asyncio.create_task(trim_every(interval, glibc_trim()))


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for key in ("apitoken_watch", "secret_watch", "memory_trim"):
        _cancel(memo.get(key))
    stop = memo.get("stop_metrics")
    if callable(stop):
        stop()
    rt = memo.get("runtime")
    if isinstance(rt, Runtime):
        await rt.scheduler.stop()  # the runs in progress finish first
        await rt.events.drain(timeout=2.0)  # and their events go out
        _cancel(memo.get("events"))
        await rt.aclose()
    # Kopf's stop-flag checker, cancelled when the operator stops for another reason (SIGTERM),
    # leaves its task waiting on the flag running; Kopf then waits 5 s for that "hung" task
    # before it returns and the Lease can be released. Setting the flag ends the wait at once.
    flag = memo.get("stop_flag")
    if isinstance(flag, asyncio.Event):
        flag.set()


def _cancel(task: object) -> None:
    if isinstance(task, asyncio.Task):
        task.cancel()


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
        post(rt, (Posting(result.body, e) for e in result.outcome.events))
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
            post(rt, (Posting(result.body, e) for e in result.outcome.events))
            decision = result.outcome.decision
            return rt.clock() if decision.actions else decision.requeue_at

        await _daemon(rt, uid, step, f"{kind.value} {namespace or ''}/{name}")


for _kind, _plural in PLURALS.items():
    _workspace_handlers(_plural, _kind)

__all__ = ["configure", "registry"]
