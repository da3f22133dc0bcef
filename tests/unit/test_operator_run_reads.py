"""What an ApiToken run reads and writes, counted at a fake apiserver and a fake token service
(docs/architecture.md, "What a run reads"): a scheduled run with nothing due reads nothing,
lists nothing at the service and writes nothing (it starts from the ApiToken and the Secret
the last run ended with); a wake-up makes the next run read both again."""

import asyncio
import copy
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User
from prometheus_client import generate_latest

from apitoken_operator.core.bodies import observed_secret
from apitoken_operator.crd import reasons
from apitoken_operator.handlers.apitoken_watch import scheduled_run
from apitoken_operator.handlers.secret_watch import Owner, first_run_from_listing
from apitoken_operator.providers.answers import rfc3339
from apitoken_operator.reconcilers.apitoken import run_api_token
from unit.test_operator_write_failures import GROUP_PATH, ClockedRuntime, Cluster, FakeApiServer

pytestmark = pytest.mark.unit

NAMESPACE = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "apps", "resourceVersion": "1", "labels": {"team": "a"}},
    "status": {"phase": "Active"},
}
TOKEN_PATH = f"{GROUP_PATH}/namespaces/apps/apitokens/billing"
SECRET_PATH = "/api/v1/namespaces/apps/secrets/billing"


def with_namespace_watch(api: FakeApiServer) -> AsyncClient:
    """The fake apiserver plus a Namespace list and a watch that stays open, quietly."""

    async def handle(request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path == "/api/v1/namespaces":
            if request.url.params.get("watch"):
                await asyncio.Event().wait()
            api.gets.append("list /api/v1/namespaces")
            body = {"kind": "NamespaceList", "apiVersion": "v1", "items": [NAMESPACE]}
            return httpx2.Response(200, json={**body, "metadata": {"resourceVersion": "1"}})
        return api.handle(request)

    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    return AsyncClient(config, transport=httpx2.MockTransport(handle))


def cluster_with_api_token() -> Cluster:
    """The fake cluster with the Namespace watch and one ApiToken, apps/billing."""
    c = Cluster.new()
    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)
    spec: dict[str, Any] = {"workspaceRef": {"kind": "ClusterTokenWorkspace", "name": "main"}}
    meta = {"name": "billing", "namespace": "apps", "uid": "tok-uid", "generation": 1}
    c.api.put(
        TOKEN_PATH,
        {"apiVersion": "apitoken.dev/v1alpha1", "kind": "ApiToken", "metadata": meta, "spec": spec},
    )
    return c


async def test_a_scheduled_run_with_nothing_due_reads_nothing_and_writes_nothing() -> None:
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))  # read live until the watch listed
    try:
        workspace = await c.run()  # the operator's credential in the workspace
        assert workspace is not None and workspace.usable
        # The first run issues the token; the next starts from the body it ended with.
        first = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert first is not None and [p.event.reason for p in first.postings] == ["Generated"]
        ready = first.status.condition(reasons.READY)
        assert ready is not None and ready.status == "True"
        assert await run_api_token(c.rt, "apps", "billing", "tok-uid") is not None
        await asyncio.sleep(0.05)  # the Namespace watch lists
        gets, patches = len(c.api.gets), len(c.api.status_patches)
        writes, calls = c.api.secret_writes, len(c.service.calls)

        c.clock.now += timedelta(minutes=1)  # the access token lives an hour: nothing due
        idle = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert idle is not None and idle.postings == ()
        assert c.api.gets[gets:] == []  # no ApiToken, Secret or Namespace GET
        assert len(c.api.status_patches) == patches and c.api.secret_writes == writes
        assert c.service.calls[calls:] == []  # no list, no refresh

        c.rt.wake("tok-uid")  # Kopf saw an event of the ApiToken: read both again
        gets = len(c.api.gets)
        await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert c.api.gets[gets:] == [TOKEN_PATH, SECRET_PATH]
    finally:
        await c.rt.namespaces.aclose()


async def issued_by_a_first_process() -> Cluster:
    """The fake cluster after a first operator process issued apps/billing's token."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    try:
        assert (await c.run()) is not None
        first = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert first is not None and [p.event.reason for p in first.postings] == ["Generated"]
    finally:
        await c.rt.namespaces.aclose()
    return c


async def test_a_new_process_runs_a_settled_api_token_without_listing_its_tokens() -> None:
    """After a restart the first run of a Ready ApiToken with nothing due reads it and its
    Secret live and lists nothing at the service: its first sweep gets a time within the
    sweep interval instead (10,000 lists at once would follow every restart)."""
    c = await issued_by_a_first_process()
    listed = [call for call in c.service.calls if call.startswith("GET ")]
    # Its first run added the finalizer: no run called the service before, nothing to list.
    assert listed == []
    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)  # a restart
    try:
        assert (await c.run()) is not None
        c.clock.now += timedelta(minutes=1)
        calls, gets = len(c.service.calls), len(c.api.gets)
        again = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert again is not None and again.postings == ()
        assert [call for call in c.service.calls[calls:] if call.startswith("GET ")] == []
        assert TOKEN_PATH in c.api.gets[gets:] and SECRET_PATH in c.api.gets[gets:]
        swept = c.rt.swept["tok-uid"]
        interval = c.rt.settings.sweep_interval
        assert c.clock.now - interval <= swept <= c.clock.now
    finally:
        await c.rt.namespaces.aclose()


async def test_a_restart_starts_from_the_listed_bodies_and_the_secrets_plan() -> None:
    """The Secret watch's first listing hands a new process each Secret and the refresh it
    plans, Kopf's the ApiToken (the resume handler seeds it): the first run of a settled
    ApiToken then reads nothing live, and it is due no later than that refresh."""
    c = await issued_by_a_first_process()
    secret = observed_secret(c.api.objects[SECRET_PATH])
    assert secret is not None and secret.next_refresh_at is not None

    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)  # a restart
    try:
        assert (await c.run()) is not None
        first_run_from_listing(
            c.rt, Owner("tok-uid", "apps", "billing"), copy.deepcopy(c.api.objects[SECRET_PATH])
        )
        assert c.rt.listed_plans == {"tok-uid": secret.next_refresh_at}
        c.rt.token_bodies.seed("tok-uid", copy.deepcopy(c.api.objects[TOKEN_PATH]))
        c.clock.now += timedelta(minutes=1)
        calls, gets = len(c.service.calls), len(c.api.gets)
        again = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert again is not None and again.postings == ()
        # No ApiToken or Secret GET (the Namespace is read live until its watch listed).
        assert {TOKEN_PATH, SECRET_PATH}.isdisjoint(c.api.gets[gets:])
        assert c.service.calls[calls:] == []
        assert again.requeue_at == secret.next_refresh_at
    finally:
        await c.rt.namespaces.aclose()


async def test_a_refresh_that_fell_due_before_the_listing_is_caught_up_soon() -> None:
    """A Secret listed after its planned refresh passed (the seconds without a leader): the
    first run is due within the catch-up window from now, never later than halfway to the
    access token's expiry, not at the plan already past (hundreds at once, run E)."""
    c = await issued_by_a_first_process()
    secret = observed_secret(c.api.objects[SECRET_PATH])
    assert secret is not None and secret.next_refresh_at is not None
    expires = secret.access_token_expires_at
    assert expires is not None
    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)  # a restart
    try:
        c.clock.now = secret.next_refresh_at + timedelta(seconds=3)
        assert c.clock.now < expires
        first_run_from_listing(
            c.rt, Owner("tok-uid", "apps", "billing"), copy.deepcopy(c.api.objects[SECRET_PATH])
        )
        due = c.rt.scheduler.queue.due_at("tok-uid")
        assert due is not None and due == c.rt.listed_plans["tok-uid"]
        latest = c.clock.now + min(c.rt.settings.catch_up_spread, (expires - c.clock.now) / 2)
        assert c.clock.now <= due <= latest
    finally:
        await c.rt.namespaces.aclose()
        await c.rt.aclose()


async def test_the_run_adds_the_finalizer_before_the_service_is_called() -> None:
    """Kopf no longer adds it: the first run patches it in (a JSON patch tested against the
    resourceVersion read) before any call that could leave a token at the service."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    try:
        assert (await c.run()) is not None
        calls = len(c.service.calls)
        stored = c.api.objects.pop(TOKEN_PATH)  # deleted before its first run: nothing issued
        c.rt.token_bodies.seed("tok-uid", stored)  # the body the watch delivered
        assert await run_api_token(c.rt, "apps", "billing", "tok-uid") is None
        assert c.service.calls[calls:] == []
        c.api.put(TOKEN_PATH, stored)
        first = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert first is not None and [p.event.reason for p in first.postings] == ["Generated"]
        assert c.api.objects[TOKEN_PATH]["metadata"]["finalizers"] == ["apitoken.dev/finalizer"]
        assert c.api.json_patches == [TOKEN_PATH]
        assert await run_api_token(c.rt, "apps", "billing", "tok-uid") is not None
        assert c.api.json_patches == [TOKEN_PATH]  # once
    finally:
        await c.rt.namespaces.aclose()


async def test_a_released_deletion_run_removes_the_finalizer_and_forgets_the_api_token() -> None:
    c = await issued_by_a_first_process()
    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)
    try:
        assert (await c.run()) is not None
        body = c.api.objects[TOKEN_PATH]
        body["metadata"]["deletionTimestamp"] = rfc3339(c.clock.now)
        body["metadata"]["finalizers"] = ["other.example/keep", "apitoken.dev/finalizer"]
        c.rt.token_refs["tok-uid"] = ("apps", "billing")
        done = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert done is not None and done.released
        # Only ours is removed; another controller's stays.
        assert c.api.objects[TOKEN_PATH]["metadata"]["finalizers"] == ["other.example/keep"]
        assert "tok-uid" not in c.rt.token_refs
        assert c.rt.secret_owners == {}
    finally:
        await c.rt.namespaces.aclose()


async def test_a_first_run_lists_only_when_an_earlier_run_may_have_called_the_service() -> None:
    """An ApiToken without the finalizer was never run (every run adds it before calling the
    service): no list. One that has it but records no token may hold one a crash left
    between the service's answer and the Secret: its first run lists, and sweeps."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    c.api.objects[TOKEN_PATH]["metadata"]["finalizers"] = ["apitoken.dev/finalizer"]
    try:
        assert (await c.run()) is not None
        calls = len(c.service.calls)
        first = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert first is not None and [p.event.reason for p in first.postings] == ["Generated"]
        assert [call for call in c.service.calls[calls:] if call.startswith("GET ")] != []
        assert c.api.json_patches == []  # it had the finalizer
    finally:
        await c.rt.namespaces.aclose()


async def test_an_api_token_gone_without_a_released_run_is_forgotten() -> None:
    """Deleted while it had no finalizer of ours (someone removed it): its next run finds it
    gone and the process forgets it, its expiry metrics and Secret ownership included."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    try:
        assert (await c.run()) is not None
        c.rt.token_refs["tok-uid"] = ("apps", "billing")
        assert await scheduled_run(c.rt, "tok-uid") is not None
        exposed = generate_latest(c.rt.metrics.registry).decode()
        assert 'name="billing"' in exposed and ("apps", "billing") in c.rt.secret_owners
        del c.api.objects[TOKEN_PATH]
        c.rt.wake("tok-uid")  # the watch's DELETED event
        assert await scheduled_run(c.rt, "tok-uid") is None
        assert 'name="billing"' not in generate_latest(c.rt.metrics.registry).decode()
        assert c.rt.secret_owners == {} and "tok-uid" not in c.rt.token_refs
    finally:
        await c.rt.namespaces.aclose()


def deleting(body: dict[str, Any], now: Any) -> None:
    body["metadata"]["deletionTimestamp"] = rfc3339(now)


async def test_a_spec_never_valid_gets_no_finalizer() -> None:
    """Its runs never call the service, so nothing would hold its deletion for."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    c.api.objects[TOKEN_PATH]["spec"]["lifetimeDays"] = 400
    try:
        assert (await c.run()) is not None
        calls = len(c.service.calls)
        done = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert done is not None and not done.released
        stored = c.api.objects[TOKEN_PATH]
        assert "finalizers" not in stored["metadata"]
        ready = next(x for x in stored["status"]["conditions"] if x["type"] == "Ready")
        assert ready["reason"] == reasons.INVALID_SPEC and "lifetimeDays" in ready["message"]
        assert c.service.calls[calls:] == [] and c.api.json_patches == []
    finally:
        await c.rt.namespaces.aclose()


async def test_an_invalid_spec_that_records_no_token_is_released_on_deletion() -> None:
    """A finalizer from an earlier valid spec, no token recorded: the deletion goes through
    (it waited for a manual finalizer removal before)."""
    c = cluster_with_api_token()
    c.api.put("/api/v1/namespaces/apps", dict(NAMESPACE))
    body = c.api.objects[TOKEN_PATH]
    body["spec"]["lifetimeDays"] = 400
    body["metadata"]["finalizers"] = ["other.example/keep", "apitoken.dev/finalizer"]
    deleting(body, c.clock.now)
    try:
        assert (await c.run()) is not None
        c.rt.token_refs["tok-uid"] = ("apps", "billing")
        done = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert done is not None and done.released
        assert c.api.objects[TOKEN_PATH]["metadata"]["finalizers"] == ["other.example/keep"]
        assert "tok-uid" not in c.rt.token_refs
    finally:
        await c.rt.namespaces.aclose()


async def test_an_invalid_spec_holding_a_token_waits_until_abandoned() -> None:
    """Its token cannot be cleaned up without a workspace to trust: the deletion waits and
    says how to go on; apitoken.dev/abandon then releases it."""
    c = await issued_by_a_first_process()
    c.rt = ClockedRuntime(with_namespace_watch(c.api), c.clock, c.service)
    try:
        assert (await c.run()) is not None
        body = c.api.objects[TOKEN_PATH]
        assert body["status"]["tokenId"] and body["metadata"]["finalizers"]
        body["spec"]["lifetimeDays"] = 400
        deleting(body, c.clock.now)
        c.rt.token_refs["tok-uid"] = ("apps", "billing")
        waits = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert waits is not None and not waits.released
        stored = c.api.objects[TOKEN_PATH]
        assert stored["metadata"]["finalizers"] == ["apitoken.dev/finalizer"]
        ready = next(x for x in stored["status"]["conditions"] if x["type"] == "Ready")
        assert ready["reason"] == reasons.INVALID_SPEC
        assert "lifetimeDays" in ready["message"] and "apitoken.dev/abandon" in ready["message"]
        stored["metadata"]["annotations"] = {"apitoken.dev/abandon": "true"}
        done = await run_api_token(c.rt, "apps", "billing", "tok-uid")
        assert done is not None and done.released
        assert c.api.objects[TOKEN_PATH]["metadata"]["finalizers"] == []
    finally:
        await c.rt.namespaces.aclose()
