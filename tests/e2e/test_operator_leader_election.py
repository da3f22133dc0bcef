"""Leader election (`kube.lease.LeaseElector`) and fenced Secret writes
(`kube.objects.SecretApplier`) against the real kube-apiserver, with Leases of a few seconds:
one holder at a time, takeover after the holder stops renewing, the write gate shut before
that, an immediate takeover after a release, and a Secret write refused when the Secret changed
since the run read it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.coordination_v1 import Lease

from apitoken_operator.core.leader import LeaseTiming
from apitoken_operator.kube.lease import LeaseElector, NotLeading
from apitoken_operator.kube.objects import SecretApplier, get_secret, resource_version
from apitoken_operator.providers.http import utc_now
from localkube import Cluster

pytestmark = pytest.mark.e2e

TIMING = LeaseTiming(
    duration=timedelta(seconds=3),
    renew_deadline=timedelta(seconds=2),
    retry_period=timedelta(milliseconds=500),
)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[AsyncClient]:
    c = AsyncClient(KubeConfig.from_file(str(cluster.kubeconfig)))
    yield c
    await c.close()


def elector(client: AsyncClient, namespace: str, identity: str) -> LeaseElector:
    return LeaseElector(
        client,
        namespace=namespace,
        name="operator",
        identity=identity,
        timing=TIMING,
        wall_clock=utc_now,
    )


async def test_one_holder_takeover_after_the_lease_and_the_gate_shut_before(
    client: AsyncClient, namespace: str
) -> None:
    a, b = elector(client, namespace, "a"), elector(client, namespace, "b")
    assert not a.may_write()
    await asyncio.wait_for(a.acquire(), timeout=5)
    assert a.may_write()
    a.check()
    assert not await b.try_acquire_or_renew()
    with pytest.raises(NotLeading):
        b.check()

    # a stops renewing (as if frozen): its gate shuts at the renew deadline, b takes over
    # only after the full duration, as b measures it from its own first sighting.
    started = time.monotonic()
    taken = asyncio.create_task(b.acquire())
    while a.may_write():
        assert not taken.done(), "b took the Lease while a could still write"
        await asyncio.sleep(0.05)
    gate_shut = time.monotonic() - started
    await asyncio.wait_for(taken, timeout=10)
    takeover = time.monotonic() - started
    assert gate_shut < takeover
    assert TIMING.duration.total_seconds() - 0.6 <= takeover < TIMING.duration.total_seconds() + 3
    assert b.may_write() and not a.may_write()
    # The old holder's renewal finds the Lease taken.
    assert not await a.try_acquire_or_renew()


async def test_a_holder_that_cannot_renew_stops_and_a_release_hands_over_at_once(
    client: AsyncClient, namespace: str
) -> None:
    a, b = elector(client, namespace, "a"), elector(client, namespace, "b")
    await a.acquire()
    holding = asyncio.create_task(a.hold())
    await asyncio.sleep(1.5)
    assert not holding.done() and a.may_write()  # renewals keep it
    holding.cancel()
    await a.release()
    assert not a.may_write()
    started = time.monotonic()
    await asyncio.wait_for(b.acquire(), timeout=5)
    assert time.monotonic() - started < 1.5  # no waiting out the duration

    # The Lease taken from under a renewing holder (written by hand here): hold() returns at
    # its next renewal and the gate is shut.
    holding = asyncio.create_task(b.hold())
    lease = await client.get(Lease, "operator", namespace=namespace)
    assert lease.spec is not None
    lease.spec.holderIdentity = "c"
    await client.replace(lease)
    await asyncio.wait_for(holding, timeout=5)
    assert not b.may_write()


async def test_the_same_identity_takes_its_lease_back_at_once(
    client: AsyncClient, namespace: str
) -> None:
    await elector(client, namespace, "pod-1").acquire()
    restarted = elector(client, namespace, "pod-1")  # the container restarted in its Pod
    started = time.monotonic()
    assert await restarted.try_acquire_or_renew()
    assert time.monotonic() - started < 1


async def test_a_secret_write_is_fenced_by_the_resource_version_it_read(
    client: AsyncClient, namespace: str
) -> None:
    def manifest(value: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "fenced", "namespace": namespace},
            "stringData": {"refresh_token": value},
        }

    await SecretApplier(client).apply(manifest("first"))
    read = resource_version(await get_secret(client, namespace, "fenced"))
    stale = SecretApplier(client, expected_version=read)
    # The new holder writes a newer token meanwhile.
    fresh = SecretApplier(client, expected_version=read)
    await fresh.apply(manifest("newer"))
    with pytest.raises(ApiError) as refused:
        await stale.apply(manifest("older"))
    assert refused.value.status.code == 409
    body = await get_secret(client, namespace, "fenced")
    assert body is not None and body["data"]["refresh_token"] == "bmV3ZXI="  # "newer"
    # A writer follows its own writes: a second write of the same run goes through.
    await fresh.apply(manifest("newest"))

    def shut() -> None:
        raise NotLeading("test")

    gated = SecretApplier(client, gate=shut)
    with pytest.raises(NotLeading):
        await gated.apply(manifest("never"))
    body = await get_secret(client, namespace, "fenced")
    assert body is not None and body["data"]["refresh_token"] == "bmV3ZXN0"  # "newest"
