"""Leader election through a coordination.k8s.io Lease, decided without I/O (the rules of
client-go's leaderelection, `tryAcquireOrRenew`).

Expiry is judged on this process's monotonic clock from when it last *saw the record change*,
never from the holder's renewTime: the clocks of two machines are not compared. A holder may
write only until `renew_deadline` after it *sent* its last successful renewal; that deadline is
shorter than the Lease's duration, so a holder that cannot renew stops writing before any
standby may take the Lease.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class LeaseTiming:
    # client-go's defaults: a standby takes over at most duration + retry_period after the
    # holder's last renewal (17 s), well under 30 s.
    duration: timedelta = timedelta(seconds=15)
    renew_deadline: timedelta = timedelta(seconds=10)
    retry_period: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        if not self.duration > self.renew_deadline > self.retry_period > timedelta(0):
            raise ValueError(
                "lease timing needs duration > renew deadline > retry period > 0 "
                f"(got {self.duration}, {self.renew_deadline}, {self.retry_period})"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease, as far as election reads it."""

    holder: str | None
    duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Observed:
    """A record as last seen, and when (monotonic seconds of this process)."""

    record: LeaseRecord
    at: float


def observe(previous: Observed | None, record: LeaseRecord, now: float) -> Observed:
    """Restart the expiry clock only when the record changed since it was last seen."""
    if previous is not None and previous.record == record:
        return previous
    return Observed(record, now)


def held_by_other(seen: Observed, identity: str, now: float) -> bool:
    """Another identity holds the Lease and it has not expired as seen from here."""
    holder = seen.record.holder
    if not holder or holder == identity:
        return False
    return now < seen.at + seen.record.duration_seconds


def claimed(
    record: LeaseRecord | None, identity: str, wall_now: datetime, timing: LeaseTiming
) -> LeaseRecord:
    """The record to write to acquire or renew. A holder keeps its acquireTime; a new holder
    counts a transition. The same identity (the same Pod after a container restart) renews
    at once: the process it replaces is gone."""
    duration = int(timing.duration.total_seconds())
    if record is None:
        return LeaseRecord(identity, duration, wall_now, wall_now, 0)
    if record.holder == identity:
        return replace(record, duration_seconds=duration, renew_time=wall_now)
    return LeaseRecord(identity, duration, wall_now, wall_now, record.transitions + 1)


def released(record: LeaseRecord, wall_now: datetime) -> LeaseRecord:
    """What a holder writes when it stops cleanly: no holder, so a standby takes over at
    once instead of waiting out the duration (client-go's ReleaseOnCancel)."""
    return replace(record, holder=None, duration_seconds=1, renew_time=wall_now)


def may_write(last_renewal_sent: float | None, now: float, timing: LeaseTiming) -> bool:
    """The write gate: only within the renew deadline of the last successful renewal, measured
    from when that renewal was sent (it may have reached the apiserver any time after)."""
    if last_renewal_sent is None:
        return False
    return now < last_renewal_sent + timing.renew_deadline.total_seconds()


__all__ = [
    "LeaseRecord",
    "LeaseTiming",
    "Observed",
    "claimed",
    "held_by_other",
    "may_write",
    "observe",
    "released",
]
