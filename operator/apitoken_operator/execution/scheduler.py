"""The runner over `core.due_queue`: a fixed pool of worker tasks that run due keys.

One of these replaces a sleeping task per ApiToken. At most `workers` runs are in flight, so a
burst (a thousand ApiTokens applied at once, a restart that finds ten thousand) queues instead
of starting every run together; the queue never hands out a key that is running, so runs of
one key never overlap. A run is shielded: stopping lets the runs in progress finish (within
`grace`) so a refresh is never cut off before its values are written.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from apitoken_operator.core.due_queue import DueQueue, clamp_next_run

log = logging.getLogger(__name__)

# One run of a key: when it is due again (None: it is gone, forget it).
Run = Callable[[str], Awaitable[datetime | None]]


class Scheduler:
    def __init__(
        self,
        *,
        workers: int,
        clock: Callable[[], datetime],
        idle: timedelta,
        backoff: Callable[[str, int], timedelta],
        floor: timedelta = timedelta(milliseconds=200),
    ) -> None:
        if workers < 1:
            raise ValueError(f"at least one worker: {workers}")
        self.workers = workers
        self.queue: DueQueue[str] = DueQueue(backoff)
        self._clock = clock
        self._idle = idle
        self._floor = floor
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def add(self, key: str, at: datetime | None = None, *, fresh: bool = False) -> None:
        """Run `key` at `at` (default: now), `fresh` after the keys' own next runs
        (`core.due_queue`); a key already queued sooner keeps its time."""
        now = self._clock()
        at = now if at is None else at
        current = self.queue.due_at(key)
        if current is not None and current <= at:
            return
        self.queue.schedule(key, at, fresh=fresh)
        self._changed.set()

    def wake(self, key: str) -> bool:
        woken = self.queue.wake(key, self._clock())
        if woken:
            self._changed.set()
        return woken

    def remove(self, key: str) -> None:
        self.queue.remove(key)

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self, run: Run, what: Callable[[str], str] = str) -> None:
        """Start the workers; once stopped, a scheduler stays stopped (a late handler at
        shutdown starts nothing)."""
        if self._stopping or self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._work(run, what), name=f"scheduler-worker-{i}")
            for i in range(self.workers)
        ]

    async def stop(self, grace: timedelta = timedelta(seconds=10)) -> None:
        """Take no new run; wait up to `grace` for the runs in progress, then cancel the
        workers (a shielded run still finishes on its own)."""
        self._stopping = True
        self._changed.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace.total_seconds())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self, run: Run, what: Callable[[str], str]) -> None:
        while not self._stopping:
            now = self._clock()
            key = self.queue.pop_due(now)
            if key is None:
                await self._wait(now)
                continue
            try:
                next_at = await asyncio.shield(run(key))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kubernetes API trouble: retry with the key's backoff
                self.queue.failed(key, self._clock())
                self._changed.set()
                attempt = self.queue.failures(key)
                log.warning("%s: run failed (%s), attempt %d", what(key), short_error(exc), attempt)
                continue
            now = self._clock()
            nxt = (
                None
                if next_at is None
                else clamp_next_run(next_at, now, idle=self._idle, floor=self._floor)
            )
            self.queue.done(key, nxt, now)
            self._changed.set()

    async def _wait(self, now: datetime) -> None:
        nxt = self.queue.next_due()
        timeout = self._idle if nxt is None else max(nxt - now, timedelta(0))
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=timeout.total_seconds())
        except TimeoutError:
            pass


def short_error(exc: Exception) -> str:
    """The type, status code and reason of an error, never its message: an apiserver may
    echo what it was sent, and a Secret write carries token values."""
    status = getattr(exc, "status", None)
    code, reason = getattr(status, "code", None), getattr(status, "reason", None)
    detail = f": {code} {reason}" if code else ""
    return f"{type(exc).__name__}{detail}"
