"""ApiTokens through one lightkube watch of the operator's own, not Kopf's handlers.

Each event is decided by `core.apitoken.events.on_event` and only queues, wakes or forgets a run
of the scheduler (`execution.scheduler`); every run, the deletion's too, is the scheduler's
(`scheduled_run`), and the run keeps the finalizer (`reconcilers.apitoken`). Kopf serves the
workspaces only: its per-object processing, its finalizer and diff-base PATCHes and its resume
handler per listed ApiToken were most of the operator's work per new ApiToken at 10,000
(docs/benchmarks.md), and an event here costs a dict lookup.

A new ApiToken's first run starts from the body the watch delivered (no GET); any later change
makes the next run read live. One found at start-up runs at the resume rule
(`core.apitoken.resume`), or at the refresh its Secret plans when the Secret watch's listing
queued it first. A restarted watch lists again: what it remembered per UID tells a change
from a repeat.
"""

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from lightkube import ALL_NS
from pydantic import ValidationError

from apitoken_operator.core.apitoken.decide import ApiTokenView
from apitoken_operator.core.apitoken.events import Seen, Step, on_event, reissue_pending
from apitoken_operator.core.apitoken.resume import resume_due, settled
from apitoken_operator.core.bodies import api_token_view
from apitoken_operator.crd.names import ANNOTATION_REISSUE
from apitoken_operator.kube.known_bodies import Body
from apitoken_operator.kube.listwatch import list_then_watch
from apitoken_operator.kube.resources import ApiToken
from apitoken_operator.reconcilers.apitoken import Posting, forget, run_api_token
from apitoken_operator.runtime import Runtime

log = logging.getLogger(__name__)


def apply_event(rt: Runtime, event_type: str, body: Body, seen: dict[str, Seen]) -> Step:
    """Take the step one watch event of an ApiToken asks for; `seen` is the watch's memory."""
    meta: Mapping[str, Any] = body.get("metadata") or {}
    uid, namespace, name = str(meta.get("uid") or ""), meta.get("namespace"), meta.get("name")
    if not (uid and namespace and name):
        return Step.NOTHING
    step, now_seen = on_event(event_type, body, seen.get(uid))
    if now_seen is None:
        seen.pop(uid, None)
    else:
        seen[uid] = now_seen
    if step is Step.FORGET:
        if uid in rt.token_refs:
            rt.wake(uid)  # its run reads it live, finds it gone and forgets it
        else:
            rt.token_bodies.forget(uid)
            rt.secret_bodies.forget(uid)
    elif step is Step.RESUME:
        resume(rt, uid, (str(namespace), str(name)), body)
    elif step in (Step.RUN_FRESH, Step.RUN_DELETION):
        if (
            step is Step.RUN_FRESH
            and now_seen
            and reissue_pending(now_seen, body.get("status") or {})
        ):
            where = {"k8s_namespace": namespace, "k8s_name": name}
            log.info("re-issue requested (%s): running now", ANNOTATION_REISSUE, extra=where)
        first = uid not in rt.token_refs
        rt.token_bodies.invalidate(uid)
        rt.secret_bodies.invalidate(uid)
        rt.token_refs[uid] = (str(namespace), str(name))
        rt.scheduler.add(uid, fresh=step is Step.RUN_FRESH)
        if first:
            # Nothing this process has is newer: its first run starts from this body.
            rt.token_bodies.seed(uid, body)
    return step


def resume(rt: Runtime, uid: str, ref: tuple[str, str], body: Body) -> None:
    """An ApiToken found at start-up: its first run at the resume rule, spread over a window
    and never after a planned refresh or re-issue; when the Secret watch's listing queued it
    at its Secret's plan already (and it may have run since), the body only saves a GET."""
    try:
        view: ApiTokenView | None = api_token_view(body)
    except ValidationError:
        view = None  # its run records why
    calm = view is not None and settled(view)
    listed = rt.listed_plans.pop(uid, None)
    if not (calm and listed is not None):
        window = rt.timing.recheck_interval
        if not calm:
            window = min(rt.settings.resume_spread, window)
        renewal = view.status.renewal_time if view is not None else None
        at = resume_due(uid, rt.clock(), window=window, planned=(listed, renewal))
        rt.token_refs[uid] = ref
        rt.scheduler.add(uid, at)
    rt.token_bodies.seed(uid, body)


async def scheduled_run(rt: Runtime, uid: str) -> datetime | None:
    """One run for the scheduler: when it is due again, None once the ApiToken is gone or
    released (its finalizer removed)."""
    ref = rt.token_refs.get(uid)
    if ref is None:
        return None
    result = await run_api_token(rt, ref[0], ref[1], uid)
    if result is None:
        # Gone without a released run (it never had the finalizer, or someone removed it):
        # what this process kept of it goes too, its expiry metrics among them.
        forget(rt, ref[0], ref[1], uid, None)
        return None
    post(rt, result.postings)
    if result.released:
        return None  # the run forgot it
    if result.more:
        return rt.clock()
    return result.requeue_at or rt.clock() + rt.timing.recheck_interval


def token_name(rt: Runtime, uid: str) -> str:
    ns, n = rt.token_refs.get(uid, ("?", "?"))
    return f"ApiToken {ns}/{n}"


def post(rt: Runtime, postings: Iterable[Posting]) -> None:
    now = rt.clock()
    for p in postings:
        e = p.event
        rt.events.post(p.body, type=e.type, reason=e.reason, message=e.message, now=now)


async def watch_api_tokens(rt: Runtime, namespaces: Sequence[str]) -> None:
    """Run until cancelled: one watch per served namespace, or one over all of them."""
    targets: Iterable[str] = namespaces or (ALL_NS,)
    await asyncio.gather(*(_watch(rt, ns) for ns in targets))


async def _watch(rt: Runtime, namespace: str) -> None:
    seen: dict[str, Seen] = {}
    delay = 1.0
    while True:
        try:
            async for event_type, token in list_then_watch(rt.kube, ApiToken, namespace=namespace):
                delay = 1.0
                obj: Any = token  # a generic resource: untyped
                apply_event(rt, event_type, cast(Body, obj.to_dict()), seen)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watch is restarted whatever went wrong
            log.warning("ApiToken watch failed (%s); restarting", type(exc).__name__)
        # Changes made while no watch ran were not seen: kept bodies are read again.
        rt.token_bodies.invalidate_all()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
