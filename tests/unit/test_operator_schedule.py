"""Refresh and renewal times, backoff and durations: pure functions with the clock passed in."""

from datetime import datetime, timedelta

import pytest

from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.schedule import (
    TimingPolicy,
    next_refresh_time,
    renewal_time,
    stable_fraction,
)
from apitoken_operator.crd.durations import parse_duration
from support.clock import T0

pytestmark = pytest.mark.unit

NO_JITTER = TimingPolicy(refresh_jitter_percent=0)


@pytest.mark.parametrize(
    ("life", "percent", "policy", "expected"),
    [
        (timedelta(hours=1), 75, NO_JITTER, timedelta(minutes=45)),
        (timedelta(minutes=5), 75, NO_JITTER, timedelta(minutes=3)),  # margin: 2 min before
        (timedelta(minutes=5), 50, NO_JITTER, timedelta(minutes=2, seconds=30)),
        (timedelta(hours=1), 95, NO_JITTER, timedelta(minutes=57)),
        (timedelta(seconds=10), 75, NO_JITTER, timedelta(seconds=5)),  # margin capped at half
        (
            timedelta(seconds=10),
            75,
            TimingPolicy(refresh_jitter_percent=0, refresh_margin=timedelta(seconds=1)),
            timedelta(seconds=7.5),
        ),
        (timedelta(0), 75, NO_JITTER, timedelta(0)),
    ],
    ids=[
        "hour-token-at-75pct",
        "5min-token-capped-by-2min-margin",
        "5min-token-at-50pct",
        "95pct-still-before-margin",
        "seconds-token-margin-capped-at-half-life",
        "seconds-token-with-test-margin",
        "already-expired-means-now",
    ],
)
def test_next_refresh_time(
    life: timedelta, percent: int, policy: TimingPolicy, expected: timedelta
) -> None:
    at = next_refresh_time(
        obtained_at=T0, expires_at=T0 + life, refresh_percent=percent, token_id="t", policy=policy
    )
    assert at == T0 + expected


def test_jitter_moves_refresh_earlier_within_the_spread_and_is_stable() -> None:
    policy = TimingPolicy(refresh_jitter_percent=10)
    times = {
        token_id: next_refresh_time(
            obtained_at=T0,
            expires_at=T0 + timedelta(hours=1),
            refresh_percent=75,
            token_id=token_id,
            policy=policy,
        )
        for token_id in (f"tok-{i}" for i in range(50))
    }
    for at in times.values():
        assert T0 + timedelta(minutes=39) <= at <= T0 + timedelta(minutes=45)
    # Spread out, not all at one instant.
    assert len(set(times.values())) > 40
    # The same token and access token give the same time after a restart.
    again = next_refresh_time(
        obtained_at=T0,
        expires_at=T0 + timedelta(hours=1),
        refresh_percent=75,
        token_id="tok-7",
        policy=policy,
    )
    assert again == times["tok-7"]


def test_stable_fraction_is_in_unit_interval_and_depends_on_input() -> None:
    values = [stable_fraction("id", str(i)) for i in range(100)]
    assert all(0 <= v < 1 for v in values)
    assert len(set(values)) == 100
    assert stable_fraction("a", "b") == stable_fraction("a", "b")


@pytest.mark.parametrize(
    ("renew_before", "expected"),
    [
        (timedelta(days=30), T0 + timedelta(days=60)),
        (timedelta(hours=1), T0 + timedelta(days=90) - timedelta(hours=1)),
    ],
    ids=["third-of-90-days", "one-hour"],
)
def test_renewal_time(renew_before: timedelta, expected: datetime) -> None:
    assert (
        renewal_time(refresh_expires_at=T0 + timedelta(days=90), renew_before=renew_before)
        == expected
    )


BASE = timedelta(seconds=5)
CAP = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (0, 0.5, timedelta(0)),
        (1, 0.0, timedelta(seconds=2.5)),
        (1, 0.999, timedelta(seconds=2.5) + timedelta(seconds=2.5) * 0.999),
        (2, 0.0, timedelta(seconds=5)),
        (3, 0.5, timedelta(seconds=15)),
        (7, 0.0, timedelta(seconds=150)),  # 5 s * 64 = 320 s, capped at 300
        (1000, 0.0, timedelta(seconds=150)),  # no overflow
    ],
    ids=["no-failure", "first", "first-max-jitter", "second", "third", "capped", "huge-attempt"],
)
def test_backoff_delay(attempt: int, jitter: float, expected: timedelta) -> None:
    assert backoff_delay(attempt, base=BASE, cap=CAP, jitter=jitter) == expected


def test_backoff_never_exceeds_cap_and_grows() -> None:
    delays = [backoff_delay(n, base=BASE, cap=CAP, jitter=0.0) for n in range(1, 12)]
    assert delays == sorted(delays)
    assert max(backoff_delay(n, base=BASE, cap=CAP, jitter=0.99) for n in range(1, 40)) < CAP


@pytest.mark.parametrize("jitter", [-0.1, 1.0], ids=["negative", "one"])
def test_backoff_rejects_bad_jitter(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        backoff_delay(1, base=BASE, cap=CAP, jitter=jitter)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", timedelta(hours=720)),
        ("36h30m", timedelta(hours=36, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("90s", timedelta(seconds=90)),
        ("1h250ms", timedelta(hours=1, milliseconds=250)),
        ("1m1s", timedelta(seconds=61)),
        ("0s", timedelta(0)),
    ],
    ids=["hours", "hours-minutes", "fraction", "seconds", "milliseconds", "minute-second", "zero"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
