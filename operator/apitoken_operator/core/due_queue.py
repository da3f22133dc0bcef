"""When each ApiToken runs next: one due-time queue for all of them (pure, clock passed in).

Replaces a sleeping task per ApiToken: the runner (`execution.scheduler`) takes the earliest
due key, runs it, and tells the queue when it is due again (`done`) or that the run failed
(`failed`, a per-key backoff). A key is either queued (with one due time, never two entries
that count), running, or absent. A wake-up or a removal while the key runs is remembered and
applied when the run ends, so the runner never runs one key twice at once.

Keys due at the same time are not equal: a key's own next run (the refresh its last run
planned, a retry, a wake-up because its Secret changed) goes before a fresh one (a new
ApiToken, a spec change), whenever both are due. Keeping the tokens that exist valid comes
first: 10,000 ApiTokens applied at once queue 10,000 fresh runs, and under plain due-time order
a refresh planned during that burst waited behind all of them (thousands of access tokens
expired while 10,000 converged, docs/benchmarks.md). Fresh keys still run whenever no kept key
is due, so they wait only as long as the refreshes keep the workers busy.
"""

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass
class _Running:
    rerun: bool = False
    removed: bool = False


class DueQueue(Generic[K]):
    def __init__(self, backoff: Callable[[K, int], timedelta]) -> None:
        # `backoff(key, attempt)`: the delay after the attempt-th failure in a row of `key`.
        self._backoff = backoff
        # key -> (due, seq, rank); rank 0: the key's own next run, 1: a fresh key.
        self._due: dict[K, tuple[datetime, int, int]] = {}
        # One heap per rank. Entries whose (due, seq) no longer match `_due` are stale and
        # skipped when popped.
        self._heaps: tuple[list[tuple[datetime, int, K]], ...] = ([], [])
        self._seq = 0
        self._running: dict[K, _Running] = {}
        self._failures: dict[K, int] = {}

    def __len__(self) -> int:
        return len(self._due) + len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._due or key in self._running

    def due_at(self, key: K) -> datetime | None:
        entry = self._due.get(key)
        return entry[0] if entry is not None else None

    def is_running(self, key: K) -> bool:
        return key in self._running

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def schedule(self, key: K, at: datetime, *, fresh: bool = False) -> None:
        """Due at `at`, replacing an earlier schedule (later or sooner); `fresh` ranks it after
        the keys' own next runs. While the key runs, its next due time is what the run
        answers; a schedule then asks for a run after it."""
        running = self._running.get(key)
        if running is not None:
            running.rerun = True
            running.removed = False
            return
        self._put(key, at, fresh=fresh)

    def wake(self, key: K, now: datetime) -> bool:
        """Due now if known (queued or running); an unknown key stays unknown (False)."""
        running = self._running.get(key)
        if running is not None:
            if running.removed:
                return False
            running.rerun = True
            return True
        entry = self._due.get(key)
        if entry is None:
            return False
        if now < entry[0]:
            self._put(key, now)
        return True

    def remove(self, key: K) -> None:
        self._due.pop(key, None)
        self._failures.pop(key, None)
        running = self._running.get(key)
        if running is not None:
            running.removed = True
            running.rerun = False

    def next_due(self) -> datetime | None:
        """The earliest due time of a queued key."""
        tops = [heap[0][0] for heap in self._heaps if self._drop_stale(heap)]
        return min(tops) if tops else None

    def pop_due(self, now: datetime) -> K | None:
        """A queued key due by `now`, the earliest of the keys' own next runs before the
        earliest fresh key; it is running from then on."""
        for heap in self._heaps:
            if self._drop_stale(heap) and heap[0][0] <= now:
                _, _, key = heapq.heappop(heap)
                del self._due[key]
                self._running[key] = _Running()
                return key
        return None

    def done(self, key: K, next_at: datetime | None, now: datetime) -> None:
        """A run ended: due again at `next_at` (None: the key is gone), or now if woken
        meanwhile. The failure count starts again."""
        running = self._running.pop(key, _Running())
        self._failures.pop(key, None)
        if running.removed or next_at is None:
            return
        self._put(key, now if running.rerun else next_at)

    def failed(self, key: K, now: datetime) -> datetime | None:
        """A run failed: due after the key's backoff, or now if woken meanwhile (a spec
        change may be the fix). None when the key was removed while it ran."""
        running = self._running.pop(key, _Running())
        if running.removed:
            return None
        attempt = self._failures.get(key, 0) + 1
        self._failures[key] = attempt
        at = now if running.rerun else now + self._backoff(key, attempt)
        self._put(key, at)
        return at

    def _put(self, key: K, at: datetime, *, fresh: bool = False) -> None:
        self._seq += 1
        rank = 1 if fresh else 0
        self._due[key] = (at, self._seq, rank)
        heapq.heappush(self._heaps[rank], (at, self._seq, key))
        if sum(len(heap) for heap in self._heaps) > 2 * len(self._due) + 64:
            self._compact()

    def _drop_stale(self, heap: list[tuple[datetime, int, K]]) -> bool:
        """Pop stale entries off the top of `heap`; whether a live one is left."""
        while heap:
            at, seq, key = heap[0]
            entry = self._due.get(key)
            if entry is not None and entry[:2] == (at, seq):
                return True
            heapq.heappop(heap)
        return False

    def _compact(self) -> None:
        self._heaps = ([], [])
        for key, (at, seq, rank) in self._due.items():
            self._heaps[rank].append((at, seq, key))
        for heap in self._heaps:
            heapq.heapify(heap)


def clamp_next_run(
    requeue_at: datetime | None, now: datetime, *, idle: timedelta, floor: timedelta
) -> datetime:
    """When a run that answered `requeue_at` runs again: not sooner than `floor` (no busy
    loop), not later than `idle` (a periodic look in case an event was missed)."""
    if requeue_at is None:
        return now + idle
    return min(max(requeue_at, now + floor), now + idle)
