"""Events the operator posts itself (`kube.events`): the Event's fields, and a poster that
only enqueues for the run and posts from its own task, never failing a run."""

import asyncio
import json

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User

from apitoken_operator.kube import events
from apitoken_operator.kube.events import EventPoster, event_manifest
from support.clock import T0

pytestmark = pytest.mark.unit

TOKEN = {
    "apiVersion": "apitoken.dev/v1alpha1",
    "kind": "ApiToken",
    "metadata": {"name": "billing", "namespace": "apps", "uid": "u-1", "resourceVersion": "7"},
}


def test_the_event_names_its_object_and_the_operator() -> None:
    got = event_manifest(
        TOKEN, type="Normal", reason="Generated", message="token issued", now=T0, instance="pod-a"
    )
    assert got["metadata"] == {"namespace": "apps", "generateName": "apitoken-operator-"}
    assert got["involvedObject"] == {
        "apiVersion": "apitoken.dev/v1alpha1",
        "kind": "ApiToken",
        "name": "billing",
        "namespace": "apps",
        "uid": "u-1",
    }
    assert (got["type"], got["reason"], got["message"]) == ("Normal", "Generated", "token issued")
    assert got["source"] == {"component": "apitoken-operator"}
    assert got["reportingInstance"] == "pod-a"
    assert got["firstTimestamp"] == got["lastTimestamp"] == T0.isoformat()
    long = event_manifest(
        TOKEN, type="Warning", reason="R", message="x" * 5000, now=T0, instance=""
    )
    assert len(long["message"]) <= events.MAX_MESSAGE and "..." in long["message"]


def client(handler: object) -> AsyncClient:
    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    return AsyncClient(config, transport=httpx2.MockTransport(handler))  # type: ignore[arg-type]


async def test_the_poster_posts_from_its_own_task_and_a_failure_stops_nothing() -> None:
    posted: list[dict[str, object]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body["reason"] == "Refused":
            return httpx2.Response(403, json={"kind": "Status", "code": 403, "reason": "Forbidden"})
        posted.append({"path": request.url.path, **body})
        return httpx2.Response(201, json={**body, "metadata": {**body["metadata"], "name": "e1"}})

    kube = client(handler)
    poster = EventPoster(kube, instance="pod-a")
    poster.post(TOKEN, type="Warning", reason="Refused", message="m", now=T0)
    poster.post(TOKEN, type="Normal", reason="Generated", message="m", now=T0)
    assert posted == []  # posting only enqueues
    task = asyncio.create_task(poster.run())
    for _ in range(100):
        if posted:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await kube.close()
    assert [(p["path"], p["reason"]) for p in posted] == [
        ("/api/v1/namespaces/apps/events", "Generated")
    ]


async def test_a_full_queue_drops_new_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "QUEUE_LIMIT", 2)
    kube = client(lambda request: httpx2.Response(201, json={}))
    poster = EventPoster(kube, instance="")
    for _ in range(3):
        poster.post(TOKEN, type="Normal", reason="Generated", message="m", now=T0)
    assert poster.dropped == 1
    await kube.close()


async def test_posts_go_out_several_at_a_time_and_drain_waits_for_them() -> None:
    """One post at a time fell behind 10,000 new ApiTokens (docs/benchmarks.md, run J)."""
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return httpx2.Response(201, json=json.loads(request.content))

    kube = client(handler)
    poster = EventPoster(kube, instance="pod-a")
    for _ in range(3 * events.POSTERS):
        poster.post(TOKEN, type="Normal", reason="Generated", message="m", now=T0)
    task = asyncio.create_task(poster.run())
    for _ in range(100):
        if most == events.POSTERS:
            break
        await asyncio.sleep(0.01)
    assert most == events.POSTERS
    release.set()
    await poster.drain(timeout=5)
    assert in_flight == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await kube.close()
