"""Leader election over a coordination.k8s.io Lease (the rules are in `core.leader`).

A standby polls the Lease every retry period until it may take it; the holder renews every
retry period and gives up once it could not renew within the renew deadline. `check` is the
write gate every provider call and Secret write passes: it reads the clock, not a flag that a
task would have to set, so a process that was paused (SIGSTOP, a frozen VM) and wakes up is
refused before anything of it runs, whatever its tasks were doing.
"""

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from apitoken_operator.core.leader import (
    LeaseRecord,
    LeaseTiming,
    Observed,
    claimed,
    held_by_other,
    may_write,
    observe,
    released,
)

log = logging.getLogger(__name__)


class NotLeading(Exception):
    """This process does not hold the Lease, or could not renew it in time: it must not call
    the token service or write a Secret."""


def _record(spec: LeaseSpec | None) -> LeaseRecord:
    if spec is None:
        return LeaseRecord(None, 0)
    return LeaseRecord(
        holder=spec.holderIdentity or None,
        duration_seconds=int(spec.leaseDurationSeconds or 0),
        acquire_time=spec.acquireTime,
        renew_time=spec.renewTime,
        transitions=int(spec.leaseTransitions or 0),
    )


def _spec(record: LeaseRecord) -> LeaseSpec:
    return LeaseSpec(
        holderIdentity=record.holder or "",
        leaseDurationSeconds=record.duration_seconds,
        acquireTime=record.acquire_time,
        renewTime=record.renew_time,
        leaseTransitions=record.transitions,
    )


class LeaseElector:
    def __init__(
        self,
        client: AsyncClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        wall_clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing
        self._wall = wall_clock
        self._monotonic = monotonic
        self._seen: Observed | None = None
        self._last_renewal_sent: float | None = None
        self._lease: Lease | None = None

    # -- the write gate ------------------------------------------------------------------------

    def may_write(self) -> bool:
        return may_write(self._last_renewal_sent, self._monotonic(), self.timing)

    def check(self) -> None:
        if not self.may_write():
            raise NotLeading(f"not the holder of Lease {self.namespace}/{self.name}")

    # -- one attempt ---------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew: True if this process holds the Lease
        now. Conflicts (another writer won the race) answer False."""
        sent = self._monotonic()
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            return await self._create(sent)
        record = _record(lease.spec)
        self._seen = observe(self._seen, record, sent)
        if held_by_other(self._seen, self.identity, self._monotonic()):
            return False
        new = claimed(record, self.identity, self._wall(), self.timing)
        lease.spec = _spec(new)
        # resourceVersion from the GET: a conflict means another candidate wrote first.
        return await self._claim(self._client.replace(lease), new, sent)

    async def _create(self, sent: float) -> bool:
        new = claimed(None, self.identity, self._wall(), self.timing)
        meta = ObjectMeta(name=self.name, namespace=self.namespace)
        return await self._claim(
            self._client.create(Lease(metadata=meta, spec=_spec(new))), new, sent
        )

    async def _claim(self, write: Awaitable[Lease], new: LeaseRecord, sent: float) -> bool:
        """The write of a claim; False when another candidate won the race (409)."""
        try:
            self._lease = await write
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        self._taken(new, sent)
        return True

    def _taken(self, record: LeaseRecord, sent: float) -> None:
        if self._last_renewal_sent is None or not self.may_write():
            log.info(
                "holding Lease %s/%s as %s (transitions: %d)",
                self.namespace,
                self.name,
                self.identity,
                record.transitions,
            )
        self._seen = Observed(record, sent)
        self._last_renewal_sent = sent

    # -- the loops -----------------------------------------------------------------------------

    def _pause(self) -> float:
        # client-go's JitterFactor 1.2: candidates do not poll in step.
        return self.timing.retry_period.total_seconds() * (1 + random.random() * 1.2)

    async def acquire(self) -> None:
        """Return once this process holds the Lease (a standby waits here)."""
        log.info("standing by for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    return
            except Exception as exc:  # the apiserver is unreachable: keep trying
                log.warning("Lease %s: %s", self.name, _why(exc))
            await asyncio.sleep(self._pause())

    def hold_in_thread(self, client: Callable[[], AsyncClient], stop: threading.Event) -> bool:
        """`hold` on an event loop and a client of this thread's own: a busy operator loop
        (a thousand ApiTokens applied at once keep it saturated for many seconds) must not
        delay the renewals past the deadline. True when the Lease was lost, False when `stop`
        was set."""
        own, self._client = self._client, client()

        async def holding() -> bool:
            try:
                return await self.hold(stop)
            finally:
                await self._client.close()

        try:
            return asyncio.run(holding())
        finally:
            self._client = own

    async def hold(self, stop: threading.Event | None = None) -> bool:
        """Renew every retry period; return True when the Lease is lost (another holder took
        it, or no renewal succeeded within the renew deadline; the gate is already shut then),
        False when `stop` is set."""
        period = self.timing.retry_period.total_seconds()
        while True:
            await asyncio.sleep(period)
            if stop is not None and stop.is_set():
                return False
            while True:
                left = self._left()
                if left <= 0:
                    log.error(
                        "Lease %s/%s not renewed within %s: stopping",
                        self.namespace,
                        self.name,
                        self.timing.renew_deadline,
                    )
                    return True
                try:
                    renewed = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=left)
                except Exception as exc:  # timeouts included: try again until the deadline
                    log.warning("renewing Lease %s: %s", self.name, _why(exc))
                    await asyncio.sleep(min(period, max(self._left(), 0)))
                    continue
                if not renewed:
                    holder = self._seen.record.holder if self._seen else None
                    log.error(
                        "Lease %s/%s taken by %s: stopping", self.namespace, self.name, holder
                    )
                    self._last_renewal_sent = None
                    return True
                break

    def _left(self) -> float:
        if self._last_renewal_sent is None:
            return 0.0
        deadline = self._last_renewal_sent + self.timing.renew_deadline.total_seconds()
        return deadline - self._monotonic()

    async def release(self) -> None:
        """On a clean stop: give the Lease up so a standby takes it at once."""
        lease = self._lease
        if lease is None or not self.may_write():
            return
        self._last_renewal_sent = None  # the gate shuts before the Lease is given up
        lease.spec = _spec(released(_record(lease.spec), self._wall()))
        try:
            await self._client.replace(lease)
        except Exception as exc:  # it expires on its own
            log.warning("releasing Lease %s: %s", self.name, _why(exc))
            return
        log.info("released Lease %s/%s", self.namespace, self.name)


def _why(exc: Exception) -> str:
    status: Any = getattr(exc, "status", None)
    code = getattr(status, "code", None)
    return f"{code} {getattr(status, 'reason', '')}" if code else type(exc).__name__


__all__ = ["LeaseElector", "NotLeading"]
