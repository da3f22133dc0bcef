"""The loop behind each workspace's daemon (ApiTokens have one scheduler instead,
`execution.scheduler`): run, sleep until the decision's requeue time or an early wake-up,
repeat. Stopping is by task cancellation (Kopf cancels async daemons); a run in progress is
shielded so a refresh is never cut off before its values are written.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

# What one step answers: when to run next (None: only when woken).
Step = Callable[[], Awaitable[datetime | None]]


def sleep_seconds(
    next_at: datetime | None, now: datetime, *, idle: timedelta, floor: timedelta
) -> float:
    """How long to sleep: until `next_at`, at least `floor` (no busy loop), at most `idle`
    (a periodic look at the world in case an event was missed)."""
    if next_at is None:
        return idle.total_seconds()
    delay = min(max(next_at - now, floor), idle)
    return delay.total_seconds()


async def keep_running(
    step: Step,
    wake: asyncio.Event,
    *,
    clock: Callable[[], datetime],
    idle: timedelta,
    error_backoff: Callable[[int], float],
    floor: timedelta = timedelta(milliseconds=200),
    what: str = "",
) -> None:
    failures = 0
    while True:
        wake.clear()
        try:
            next_at = await asyncio.shield(step())
            failures = 0
            delay = sleep_seconds(next_at, clock(), idle=idle, floor=floor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Kubernetes API trouble: retry with backoff
            failures += 1
            delay = error_backoff(failures)
            log.warning("%s: run failed (%s: %s)", what, type(exc).__name__, _short(exc))
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except TimeoutError:
            pass


def _short(exc: Exception) -> str:
    """The status code and reason of an API error, never its message: an apiserver may echo
    what it was sent, and a Secret write carries token values."""
    status = getattr(exc, "status", None)
    code, reason = getattr(status, "code", None), getattr(status, "reason", None)
    return f"{code} {reason}" if code else "no details"
