"""The loop behind each workspace's daemon (ApiTokens have one scheduler instead,
`execution.scheduler`): run, sleep until the decision's requeue time or an early wake-up,
repeat. Stopping is by task cancellation (Kopf cancels async daemons); a run in progress is
shielded so a refresh is never cut off before its values are written.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from apitoken_operator.execution.scheduler import short_error

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
            log.warning("%s: run failed (%s)", what, short_error(exc))
        try:
            await asyncio.wait_for(wake.wait(), timeout=delay)
        except TimeoutError:
            pass
