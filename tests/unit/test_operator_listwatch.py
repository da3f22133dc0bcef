"""`kube.listwatch.list_then_watch`: the listing page by page, then the watch from the list's
resourceVersion (not from whatever object came last, which loses objects: docs/benchmarks.md)."""

import asyncio
import json
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube import listwatch
from apitoken_operator.kube.listwatch import PAGE, list_then_watch

pytestmark = pytest.mark.unit


def secret(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "apps", "resourceVersion": version}}


async def test_lists_every_page_then_watches_from_the_lists_version() -> None:
    requests: list[dict[str, str]] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        requests.append(params)
        if params.get("watch"):
            event = {"type": "MODIFIED", "object": secret("a", "120")}
            return httpx2.Response(200, content=json.dumps(event).encode() + b"\n")
        # Two pages of one snapshot (resourceVersion 100); objects carry older versions.
        if "continue" not in params:
            items, more = [secret("a", "7"), secret("b", "90")], {"continue": "next"}
        else:
            items, more = [secret("c", "3")], {}
        meta = {"resourceVersion": "100", **more}
        return httpx2.Response(200, json={"kind": "SecretList", "metadata": meta, "items": items})

    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    client = AsyncClient(config, transport=httpx2.MockTransport(handle))
    got: list[tuple[str, str]] = []
    try:
        async for event_type, obj in list_then_watch(
            client,
            Secret,
            namespace="apps",
            labels={"managed": "yes"},
            listed=lambda: got.append(("LISTED", "")),
        ):
            got.append((event_type, obj.metadata.name))
            if len(got) == 5:
                break
    finally:
        await client.close()
    # Told in between: after the last listed object was handed over, before the watch.
    assert got == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("LISTED", ""),
        ("MODIFIED", "a"),
    ]
    assert requests[0]["limit"] == str(PAGE) and requests[1]["continue"] == "next"
    watch = requests[2]
    assert watch["watch"] == "true" and watch["resourceVersion"] == "100"
    assert all(r["labelSelector"] == "managed=yes" for r in requests)


async def test_a_long_listing_lets_other_tasks_run_between_steps() -> None:
    """Other tasks (the scheduler's due runs) get turns while a listing is digested."""
    count = 3 * listwatch.STEP

    def handle(request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("watch"):
            return httpx2.Response(200, content=b"")
        items = [secret(f"s{i}", str(i + 1)) for i in range(count)]
        meta = {"resourceVersion": str(count)}
        return httpx2.Response(200, json={"kind": "SecretList", "metadata": meta, "items": items})

    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    client = AsyncClient(config, transport=httpx2.MockTransport(handle))
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    seen_turns: list[int] = []
    try:
        async for _, _obj in list_then_watch(client, Secret, namespace="apps"):
            seen_turns.append(turns)
            if len(seen_turns) == count:
                break
    finally:
        task.cancel()
        await client.close()
    # The other task ran between the steps, not only after the whole listing.
    assert seen_turns[listwatch.STEP] > seen_turns[0]
    assert seen_turns[2 * listwatch.STEP] > seen_turns[listwatch.STEP]
