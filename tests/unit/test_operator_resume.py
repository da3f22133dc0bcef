"""First runs. A restart's (`core.apitoken.resume`, `Runtime.plan_first_run`): which ApiTokens
are settled, the plan a listed Secret gives, that the listing queues the first run at that plan
and what the ApiToken watch's listing of such a key still does. A new ApiToken's: it starts
from the body the ApiToken watch delivered."""

import itertools
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User

from apitoken_operator.core.apitoken.decide import ApiTokenView
from apitoken_operator.core.apitoken.events import Seen, Step
from apitoken_operator.core.apitoken.resume import (
    Listed,
    catch_up,
    caught_up,
    held_back,
    listed_plan,
    settled,
    spread_evenly,
)
from apitoken_operator.core.managed_secret import ObservedSecret
from apitoken_operator.crd import names
from apitoken_operator.crd.resources import ApiTokenSpec, ApiTokenStatus
from apitoken_operator.handlers.apitoken_watch import apply_event
from apitoken_operator.handlers.secret_watch import CatchUp, Owner, listed_owner
from apitoken_operator.metrics import Metrics
from apitoken_operator.providers.answers import rfc3339
from apitoken_operator.runtime import LaunchConfig, Runtime
from support.clock import T0, Clock

pytestmark = pytest.mark.unit

READY = {
    "type": "Ready",
    "status": "True",
    "reason": "TokenReady",
    "message": "ok",
    "lastTransitionTime": "2026-11-28T12:00:00Z",
}
SETTLED_STATUS: dict[str, Any] = {
    "observedGeneration": 2,
    "tokenId": "tok-1",
    "conditions": [READY],
}


def view(status: dict[str, Any], generation: int = 2, **spec: Any) -> ApiTokenView:
    return ApiTokenView(
        namespace="apps",
        name="billing",
        uid="u",
        generation=generation,
        spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "main"}, **spec}),
        status=ApiTokenStatus.model_validate(status),
    )


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (view(SETTLED_STATUS), True),
        (view(SETTLED_STATUS, generation=3), False),
        (view({**SETTLED_STATUS, "failedRefreshAttempts": 1}), False),
        (view({**SETTLED_STATUS, "conditions": [{**READY, "status": "False"}]}), False),
        (view({k: v for k, v in SETTLED_STATUS.items() if k != "tokenId"}), False),
        (view(SETTLED_STATUS, disabled=True), False),
        (view(SETTLED_STATUS, deletionPolicy="Orphan"), False),
        (view(SETTLED_STATUS, deletionPolicy="Disable"), True),
    ],
    ids=[
        "ready-for-its-generation",
        "spec-changed-while-down",
        "a-failure-to-retry",
        "not-ready",
        "no-token-yet",
        "disabled",
        "orphan-secret-names-no-owner",
        "disable-policy",
    ],
)
def test_settled(token: ApiTokenView, expected: bool) -> None:
    assert settled(token) is expected


def test_the_plan_of_a_listed_secret() -> None:
    plan = T0 + timedelta(minutes=4)
    expires = T0 + timedelta(minutes=5)
    data = {names.KEY_EXPIRES_AT: rfc3339(expires)}
    annotated = ObservedSecret(
        "s", annotations={names.ANNOTATION_NEXT_REFRESH_AT: rfc3339(plan)}, data=data
    )
    margin = timedelta(minutes=2)
    assert listed_plan(annotated, margin) == plan
    # Written before the annotation existed: the latest moment the refresh rule allows.
    assert listed_plan(ObservedSecret("s", data=data), margin) == expires - margin
    assert listed_plan(ObservedSecret("s"), margin) is None


def test_a_refresh_that_fell_due_meanwhile_is_caught_up_spread_not_at_once() -> None:
    window = timedelta(seconds=10)
    expires = T0 + timedelta(minutes=1)
    later = T0 + timedelta(seconds=5)
    # Not due yet: at its plan.
    assert catch_up("k", later, T0, expires_at=expires, window=window) == later
    # Overdue: within the window from now, each key at its own stable time.
    overdue = [
        catch_up(f"k{i}", T0 - timedelta(seconds=3), T0, expires_at=expires, window=window)
        for i in range(200)
    ]
    assert all(T0 <= at < T0 + window for at in overdue)
    assert len(set(overdue)) == 200
    assert max(overdue) - min(overdue) > window * 0.9
    assert (
        catch_up("k7", T0 - timedelta(seconds=1), T0, expires_at=expires, window=window)
        == (overdue[7])
    )
    # Never later than halfway to the access token's expiry; at once once it expired.
    soon = T0 + timedelta(seconds=4)
    near = [
        catch_up(f"k{i}", T0 - timedelta(seconds=3), T0, expires_at=soon, window=window)
        for i in range(50)
    ]
    assert all(T0 <= at < T0 + timedelta(seconds=2) for at in near)
    gone = T0 - timedelta(seconds=1)
    assert catch_up("k", T0 - timedelta(seconds=3), T0, expires_at=gone, window=window) == T0
    assert catch_up("k", T0 - timedelta(seconds=3), T0, expires_at=None, window=window) == T0


OURS = {"apiVersion": "apitoken.dev/v1alpha1", "kind": "ApiToken", "uid": "uid-a", "name": "a"}
WORKSPACE = {"apiVersion": "apitoken.dev/v1alpha1", "kind": "TokenWorkspace", "uid": "uid-w"}


def test_the_catch_up_runs_what_a_listing_found_evenly_in_the_order_of_the_plans() -> None:
    """Overdue and due-soon refreshes in the listing's order (not the plans'): evenly spaced
    up to the cut, the most overdue first, none later than halfway to its expiry."""
    cut = T0 + timedelta(seconds=20)
    expires = T0 + timedelta(minutes=2)
    plans = [T0 + timedelta(seconds=(i * 7919) % 240 / 10 - 4) for i in range(240)]
    items = [Listed(f"k{i}", p, expires) for i, p in enumerate(plans)]
    assert all(caught_up(p, cut) for p in plans)
    slots = spread_evenly(items, T0, cut)
    by_plan = sorted(items, key=lambda item: item.plan)
    ordered = [slots[item.key] for item in by_plan]
    assert ordered == sorted(ordered) and ordered[0] == T0 and ordered[-1] < cut
    gaps = {b - a for a, b in itertools.pairwise(ordered)}
    assert gaps == {(cut - T0) / 240}
    per_second: dict[int, int] = {}
    for at in ordered:
        second = int((at - T0).total_seconds())
        per_second[second] = per_second.get(second, 0) + 1
    assert max(per_second.values()) <= 13 and len(per_second) == 20  # 12 a second
    # Halfway to the expiry bounds it, and an expired one goes at once.
    near = Listed("near", T0 + timedelta(seconds=19), T0 + timedelta(seconds=4))
    gone = Listed("gone", T0 + timedelta(seconds=19), T0 - timedelta(seconds=1))
    bounded = spread_evenly([*items, near, gone], T0, cut)
    assert bounded["near"] <= T0 + timedelta(seconds=2) and bounded["gone"] == T0
    assert spread_evenly([], T0, cut) == {}
    # Not due before the cut: at its plan, as before.
    assert not caught_up(cut, cut)
    # Held back meanwhile at the cut, no slot is later (the queue keeps the sooner).
    assert all(held_back(item, T0, cut) == cut for item in items)
    assert held_back(near, T0, cut) == T0 + timedelta(seconds=2)


def clocked() -> tuple[Runtime, Clock]:
    """A runtime on a settable clock, for the catch-up of a listing."""
    rt, clock = runtime(), Clock()
    rt.clock = clock  # type: ignore[method-assign]
    return rt, clock


async def test_a_listing_gathers_the_catch_up_and_queues_it_when_it_is_through() -> None:
    rt, clock = clocked()
    catch = CatchUp(rt)
    window = rt.settings.catch_up_spread
    assert catch.cut == T0 + window
    expires = T0 + timedelta(minutes=5)
    try:
        for i in range(4):
            item = Listed(f"u{i}", T0 - timedelta(seconds=i), expires)
            held = catch.gather(item, clock.now)
            assert held == catch.cut
            rt.plan_first_run(item.key, held, ("apps", f"t{i}"))
        # Due at the cut or later: at its plan. The cut is the listing's, not each Secret's.
        clock.now = T0 + timedelta(seconds=2)
        assert catch.gather(Listed("later", T0 + window, expires), clock.now) is None
        clock.now = T0 + timedelta(seconds=4)  # the listing took 4 s
        catch.listed()
        dues = [rt.scheduler.queue.due_at(f"u{i}") for i in range(4)]
        # The most overdue (u3) first, from the listing's end to the cut, evenly.
        step = (catch.cut - clock.now) / 4
        assert dues == [clock.now + step * q for q in (3, 2, 1, 0)]
        # After the listing, a Secret seen by the watch is no catch-up's.
        assert catch.gather(Listed("u9", T0, expires), clock.now) is None
    finally:
        await rt.aclose()


async def test_a_listing_that_outlasts_the_window_spreads_over_half_a_window() -> None:
    rt, clock = clocked()
    catch = CatchUp(rt)
    window = rt.settings.catch_up_spread
    try:
        held = catch.gather(Listed("u", T0, T0 + timedelta(hours=1)), clock.now)
        assert held is not None
        rt.plan_first_run("u", held, ("apps", "t"))
        clock.now = T0 + window * 2
        catch.listed()
        assert rt.scheduler.queue.due_at("u") == catch.cut  # held back sooner than a slot
        # Gathered after the cut passed: held half a window on, not run at once.
        late = CatchUp(rt)
        clock.now = late.cut + timedelta(seconds=1)
        assert late.gather(Listed("w", T0, T0 + timedelta(hours=1)), clock.now) == (
            clock.now + window / 2
        )
        catch2 = CatchUp(rt)
        for i in range(2):
            catch2.gather(Listed(f"v{i}", clock.now, clock.now + timedelta(hours=1)), clock.now)
        clock.now = clock.now + window * 2
        catch2.listed()
        assert rt.scheduler.queue.due_at("v1") == clock.now + window / 4
    finally:
        await rt.aclose()


@pytest.mark.parametrize(
    ("event", "owners", "run_here", "expected"),
    [
        ("ADDED", [OURS], False, Owner("uid-a", "ns", "a")),
        ("ADDED", [OURS], True, None),
        ("MODIFIED", [OURS], False, None),
        ("ADDED", [WORKSPACE], False, None),
        ("ADDED", [], False, None),
    ],
    ids=["listed", "already-run-here", "not-a-listing", "a-workspace-credential", "orphaned"],
)
def test_listed_owner(
    event: str, owners: list[dict[str, str]], run_here: bool, expected: Owner | None
) -> None:
    meta = {"namespace": "ns", "name": "s", "ownerReferences": owners}
    secret_owners = {("ns", "s"): "uid-a"} if run_here else {}
    assert listed_owner(event, meta, secret_owners) == expected


def runtime() -> Runtime:
    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    kube = AsyncClient(config, transport=httpx2.MockTransport(lambda r: httpx2.Response(404)))
    return Runtime(LaunchConfig(), kube, Metrics())


async def test_the_listing_queues_the_first_run_at_the_secrets_plan() -> None:
    rt = runtime()
    try:
        soon, later = T0 + timedelta(minutes=1), T0 + timedelta(minutes=4)
        # The Secret listing first: queued at the plan for the Secret's owner, not when the
        # ApiToken watch's listing gets to the ApiToken (its order, not the due times).
        rt.plan_first_run("u1", soon, ("apps", "a"))
        assert rt.scheduler.queue.due_at("u1") == soon
        assert rt.token_refs["u1"] == ("apps", "a")
        assert rt.listed_plans == {"u1": soon}
        # The ApiToken listing first (queued at its spread time): moved earlier.
        rt.token_refs["u2"] = ("apps", "b")
        rt.scheduler.add("u2", later)
        rt.plan_first_run("u2", soon, ("apps", "b"))
        assert rt.scheduler.queue.due_at("u2") == soon
        # Never later than it was.
        rt.plan_first_run("u2", later, ("apps", "b"))
        assert rt.scheduler.queue.due_at("u2") == soon
        assert "u2" not in rt.listed_plans  # its ApiToken listing came already
    finally:
        await rt.aclose()


def listed_body(status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apitoken.dev/v1alpha1",
        "kind": "ApiToken",
        "metadata": {"name": "billing", "namespace": "apps", "uid": "u", "generation": generation},
        "spec": {"workspaceRef": {"name": "main"}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("body", "due_minutes"),
    [
        (listed_body(SETTLED_STATUS), 3),
        (listed_body(SETTLED_STATUS, generation=3), 0),
    ],
    ids=["settled-keeps-the-listings-time", "spec-changed-runs-within-the-resume-window"],
)
async def test_the_apitoken_listing_of_a_key_the_secret_listing_queued(
    body: dict[str, Any], due_minutes: int
) -> None:
    rt = runtime()
    planned = rt.clock() + timedelta(minutes=3)
    rt.plan_first_run("u", planned, ("apps", "billing"))
    seen: dict[str, Seen] = {}
    try:
        assert apply_event(rt, "ADDED", body, seen) is Step.RESUME
        due = rt.scheduler.queue.due_at("u")
        assert due is not None
        if due_minutes:
            assert due == planned
        else:
            assert due <= rt.clock() + rt.settings.resume_spread
        assert "u" not in rt.listed_plans
        assert seen == {"u": Seen(body["metadata"]["generation"], None)}
        # The listed body saves the first run a GET either way.
        assert rt.token_bodies.take("u") is not None
    finally:
        await rt.aclose()


async def test_a_new_api_tokens_first_run_starts_from_the_body_the_watch_delivered() -> None:
    rt = runtime()
    meta = {"name": "billing", "namespace": "apps", "uid": "u", "generation": 1}
    body: dict[str, Any] = {
        "apiVersion": "apitoken.dev/v1alpha1",
        "kind": "ApiToken",
        "metadata": meta,
    }
    seen: dict[str, Seen] = {}
    try:
        assert apply_event(rt, "ADDED", body, seen) is Step.RUN_FRESH
        # Taken before any worker ran: the run would find it instead of a GET.
        assert rt.token_bodies.take("u") == body
        assert rt.scheduler.queue.due_at("u") is not None
        assert rt.token_refs["u"] == ("apps", "billing")
        # A spec change later makes the next run read live: nothing kept.
        rt.token_bodies.seed("u", body)
        changed = {**body, "metadata": {**meta, "generation": 2}}
        assert apply_event(rt, "MODIFIED", changed, seen) is Step.RUN_FRESH
        assert rt.token_bodies.take("u") is None
        # Gone: forgotten once its run finds it gone (woken now).
        assert apply_event(rt, "DELETED", changed, seen) is Step.FORGET
        assert seen == {}
    finally:
        await rt.aclose()
