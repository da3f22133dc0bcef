"""`kube.listwatch.list_then_watch`: the listing page by page, then the watch from the list's
resourceVersion (not from whatever object came last, which loses objects: docs/benchmarks.md)."""

import json
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User
from lightkube.resources.core_v1 import Secret

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
            client, Secret, namespace="apps", labels={"managed": "yes"}
        ):
            got.append((event_type, obj.metadata.name))
            if len(got) == 4:
                break
    finally:
        await client.close()
    assert got == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("MODIFIED", "a")]
    assert requests[0]["limit"] == str(PAGE) and requests[1]["continue"] == "next"
    watch = requests[2]
    assert watch["watch"] == "true" and watch["resourceVersion"] == "100"
    assert all(r["labelSelector"] == "managed=yes" for r in requests)
