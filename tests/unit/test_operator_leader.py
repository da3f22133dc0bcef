"""The rules of leader election (`core.leader`): who may take the Lease, when a holder must stop
writing, and that the timing keeps the second before the first."""

from datetime import UTC, datetime, timedelta

import pytest

from apitoken_operator.core.leader import (
    LeaseRecord,
    LeaseTiming,
    claimed,
    held_by_other,
    may_write,
    observe,
    released,
)

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TIMING = LeaseTiming()


def test_defaults_take_over_within_30_seconds_and_stop_writing_before_expiry() -> None:
    worst_takeover = TIMING.duration + TIMING.retry_period * 2.2  # jittered polling
    assert worst_takeover < timedelta(seconds=30)
    assert TIMING.renew_deadline < TIMING.duration


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [(10, 10, 2), (10, 12, 2), (10, 5, 5), (10, 5, 0)],
    ids=["deadline-equal", "deadline-longer", "retry-equal", "retry-zero"],
)
def test_timing_that_could_overlap_two_writers_is_refused(
    duration: int, deadline: int, retry: int
) -> None:
    with pytest.raises(ValueError, match="duration > renew deadline > retry period"):
        LeaseTiming(
            timedelta(seconds=duration), timedelta(seconds=deadline), timedelta(seconds=retry)
        )


def test_expiry_is_measured_from_when_the_record_was_seen_not_its_renew_time() -> None:
    # The holder's clock says it renewed an hour ago: irrelevant, this process just saw it.
    record = LeaseRecord("a", 15, T0 - timedelta(hours=1), T0 - timedelta(hours=1))
    seen = observe(None, record, now=100.0)
    assert held_by_other(seen, "b", now=114.9)
    assert not held_by_other(seen, "b", now=115.0)


def test_an_unchanged_record_keeps_its_first_sighting_a_renewed_one_restarts_it() -> None:
    record = LeaseRecord("a", 15, T0, T0)
    first = observe(None, record, now=100.0)
    assert observe(first, record, now=110.0).at == 100.0
    renewed = LeaseRecord("a", 15, T0, T0 + timedelta(seconds=2))
    assert observe(first, renewed, now=110.0).at == 110.0
    assert held_by_other(observe(first, renewed, now=110.0), "b", now=120.0)


def test_own_or_empty_lease_is_never_held_by_another() -> None:
    seen = observe(None, LeaseRecord("me", 15, T0, T0), now=0.0)
    assert not held_by_other(seen, "me", now=1.0)
    assert not held_by_other(observe(None, LeaseRecord(None, 1), now=0.0), "me", now=0.0)


def test_claims_count_transitions_and_keep_the_acquire_time_of_a_holder() -> None:
    first = claimed(None, "a", T0, TIMING)
    assert first == LeaseRecord("a", 15, T0, T0, 0)
    later = T0 + timedelta(seconds=2)
    assert claimed(first, "a", later, TIMING) == LeaseRecord("a", 15, T0, later, 0)
    taken = claimed(first, "b", later, TIMING)
    assert taken == LeaseRecord("b", 15, later, later, 1)


def test_released_lease_can_be_taken_at_once() -> None:
    gone = released(LeaseRecord("a", 15, T0, T0, 3), T0)
    assert gone.holder is None and gone.duration_seconds == 1 and gone.transitions == 3
    assert not held_by_other(observe(None, gone, now=0.0), "b", now=0.0)


def test_the_gate_closes_at_the_renew_deadline_from_the_last_renewal_sent() -> None:
    assert not may_write(None, now=0.0, timing=TIMING)
    assert may_write(100.0, now=109.9, timing=TIMING)
    assert not may_write(100.0, now=110.0, timing=TIMING)
    # ... which is before any standby could take the Lease (duration from its own sighting,
    # which is no earlier than the renewal was sent).
    assert 100.0 + TIMING.renew_deadline.total_seconds() < 100.0 + TIMING.duration.total_seconds()
