"""Pieces that make a run cheaper: the Namespace watch's reading of an event, the bodies kept
for scheduled runs, and the bound on concurrent token-service requests."""

import asyncio
import base64
import json
import os

import httpx
import pytest

from apitoken_operator.kube.known_bodies import KnownBodies
from apitoken_operator.kube.namespace_cache import state_of
from apitoken_operator.kube.objects import NamespaceState
from apitoken_operator.providers.http import BoundedTransport

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("meta", "status", "expected"),
    [
        ({"labels": {"team": "a"}}, {"phase": "Active"}, NamespaceState({"team": "a"}, False)),
        ({}, {"phase": "Terminating"}, NamespaceState({}, True)),
        ({"deletionTimestamp": "2026-12-02T20:00:00Z"}, {}, NamespaceState({}, True)),
        ({"labels": None}, {}, NamespaceState({}, False)),
    ],
    ids=["active-with-labels", "terminating-phase", "deletion-timestamp", "no-labels"],
)
def test_namespace_state_of_a_watch_event(
    meta: dict[str, object], status: dict[str, object], expected: NamespaceState
) -> None:
    assert state_of(meta, status) == expected


async def test_bounded_transport_holds_at_most_limit_requests_inside() -> None:
    inside = 0
    most = 0
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        return httpx.Response(200, json={"path": request.url.path})

    transport = BoundedTransport(httpx.MockTransport(answer), limit=3)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        calls = [asyncio.create_task(client.get(f"/{i}")) for i in range(10)]
        await asyncio.sleep(0.05)
        assert inside == 3  # the other seven wait outside
        release.set()
        answers = await asyncio.gather(*calls)
    assert most == 3
    assert [a.json()["path"] for a in answers] == [f"/{i}" for i in range(10)]


def test_known_bodies_are_taken_once_and_never_across_a_wake_up() -> None:
    bodies = KnownBodies()
    kopf = {"apitoken.dev/last-handled-configuration": "{}", "apitoken.dev/reissue": "1"}
    meta = {"uid": "u", "managedFields": [{"manager": "kopf"}], "annotations": kopf}
    body = {"metadata": meta, "spec": {}}
    bodies.begin("u")
    bodies.put("u", body)
    # What no decision reads is dropped: managedFields, Kopf's diff base.
    kept = {"uid": "u", "annotations": {"apitoken.dev/reissue": "1"}}
    assert bodies.take("u") == {"metadata": kept, "spec": {}}
    assert bodies.take("u") is None  # a failed run leaves nothing for the next one

    bodies.begin("u")
    bodies.put("u", body)
    bodies.invalidate("u")  # a wake-up: Kopf saw an event, or the Secret changed
    assert bodies.take("u") is None

    bodies.begin("u")
    bodies.invalidate("u")  # while the run was reading: what it read may be older
    bodies.put("u", body)
    assert bodies.take("u") is None

    bodies.begin("u")
    bodies.put("u", body)
    bodies.forget("u")
    assert bodies.take("u") is None


def test_known_bodies_seeded_before_a_run_and_dropped_when_the_watch_restarts() -> None:
    bodies = KnownBodies()
    body = {"metadata": {"uid": "u", "resourceVersion": "3"}, "data": {"k": "dg=="}}
    bodies.seed("u", body)  # Kopf's listing at start-up, before any run
    bodies.begin("u")
    assert bodies.take("u") == body

    bodies.put("u", {"metadata": {"uid": "u", "resourceVersion": "4"}})
    bodies.seed("u", body)  # a run began: the listing is older than what it put
    assert bodies.take("u") == {"metadata": {"uid": "u", "resourceVersion": "4"}}

    bodies.begin("u")
    bodies.put("u", body)
    bodies.invalidate_all()  # the Secret watch starts again: it may have missed changes
    assert bodies.take("u") is None

    bodies.begin("u")
    bodies.invalidate_all()  # while the run was reading
    bodies.put("u", body)
    assert bodies.take("u") is None


def test_known_bodies_are_kept_compressed_and_come_back_unchanged() -> None:
    token = "a" * 40 + base64.b64encode(os.urandom(300)).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "billing",
            "namespace": "apps",
            "resourceVersion": "41",
            "labels": {"app.kubernetes.io/managed-by": "apitoken-operator"},
            "annotations": {
                "apitoken.dev/data-hash": "sha256:" + "0f" * 32,
                "apitoken.dev/next-refresh-at": "2026-12-07T01:43:45Z",
            },
        },
        "data": {"access_token": token, "token_type": "QmVhcmVy"},
        "type": "Opaque",
    }
    bodies = KnownBodies()
    bodies.begin("u")
    bodies.put("u", secret)
    kept = bodies._bodies["u"]
    assert len(kept) < 0.75 * len(json.dumps(secret, separators=(",", ":")))
    assert bodies.take("u") == secret
