"""The steady-state bench's pure measures: planned refresh times, refresh lateness, expiry
episodes, the busiest second and the CPU windows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from bench.refresh_tracker import (
    Plan,
    SecretTracker,
    busiest_second,
    cpu_windows,
    lateness,
    operator_plan,
    unverified_claims,
)

from apitoken_operator.core.schedule import TimingPolicy, next_refresh_time

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0  # whole seconds, like iat


def rfc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fixed_plan(offset: float) -> Plan:
    """A plan `offset` seconds after iat, to keep the tracker tests about the tracker."""

    def plan(token_id: str, iat: float, expires_at: str) -> float:
        return iat + offset

    return plan


def test_the_plan_is_the_operators_rule_on_the_secrets_values() -> None:
    policy = TimingPolicy(refresh_margin=timedelta(seconds=60))
    plan = operator_plan(policy, 75)
    expected = next_refresh_time(
        obtained_at=datetime.fromtimestamp(T0, UTC),
        expires_at=datetime.fromtimestamp(T0 + 300, UTC),
        refresh_percent=75,
        token_id="tid-1",
        policy=policy,
    )
    got = plan("tid-1", T0, rfc(T0 + 300))
    assert got == expected.timestamp()
    # 75 % of 300 s less up to 20 points of jitter, and never after exp - margin.
    assert T0 + 165 <= got <= T0 + 225
    assert plan("tid-2", T0, rfc(T0 + 300)) != got  # the jitter differs per token


def test_claims_are_read_without_the_key() -> None:
    token = jwt.encode({"iat": 5, "exp": 65}, "some-key-the-bench-does-not-have", "HS256")
    assert unverified_claims(token) == {"iat": 5, "exp": 65}


def test_a_refresh_records_its_lateness_against_the_previous_tokens_plan() -> None:
    tracker = SecretTracker(fixed_plan(40))
    tracker.observe("tok-1", "tid", T0, rfc(T0 + 60), seen=T0 + 0.2)
    tracker.observe("tok-1", "tid", T0 + 42, rfc(T0 + 102), seen=T0 + 42.5)
    [refresh] = tracker.refreshes
    assert refresh.planned == T0 + 40
    assert refresh.issued == T0 + 42
    assert refresh.lateness == pytest.approx(2.5)
    assert tracker.expired_episodes == 0


def test_the_same_token_written_again_is_not_a_refresh() -> None:
    tracker = SecretTracker(fixed_plan(40))
    tracker.observe("tok-1", "tid", T0, rfc(T0 + 60), seen=T0)
    tracker.observe("tok-1", "tid", T0, rfc(T0 + 60), seen=T0 + 5)
    assert tracker.refreshes == []


def test_a_new_token_id_is_a_reissue_not_a_refresh() -> None:
    tracker = SecretTracker(fixed_plan(40))
    tracker.observe("tok-1", "tid-a", T0, rfc(T0 + 60), seen=T0)
    tracker.observe("tok-1", "tid-b", T0 + 10, rfc(T0 + 70), seen=T0 + 10)
    assert tracker.refreshes == []
    assert tracker.reissues == 1


def test_an_expiry_is_measured_exactly_when_the_successor_appears() -> None:
    tracker = SecretTracker(fixed_plan(40))
    tracker.observe("tok-1", "tid", T0, rfc(T0 + 60), seen=T0)
    tracker.observe("tok-2", "tid2", T0, rfc(T0 + 60), seen=T0)
    assert tracker.check(T0 + 59.5) == (0, 0.0)
    count, oldest = tracker.check(T0 + 61)
    assert count == 2
    assert oldest == pytest.approx(1.0)
    tracker.observe("tok-1", "tid", T0 + 63, rfc(T0 + 123), seen=T0 + 63.25)
    assert tracker.expired_episodes == 1
    assert tracker.worst_expired_age == pytest.approx(3.25)
    # tok-2 is still expired at the end of the run: counted then, with its age at that time.
    tracker.finish(T0 + 70)
    assert tracker.expired_episodes == 2
    assert tracker.expired_secrets == {"tok-1", "tok-2"}
    assert tracker.worst_expired_age == pytest.approx(10.0)
    assert tracker.most_expired_at_once == 2


def test_overdue_and_planned_counts() -> None:
    tracker = SecretTracker(fixed_plan(40))
    tracker.observe("tok-1", "a", T0, rfc(T0 + 60), seen=T0)
    tracker.observe("tok-2", "b", T0 + 10, rfc(T0 + 70), seen=T0 + 10)
    assert tracker.overdue(T0 + 46, grace=5) == 1
    assert tracker.overdue(T0 + 44, grace=5) == 0
    assert tracker.planned_between(T0 + 40, T0 + 50) == 1
    assert tracker.planned_between(T0 + 40, T0 + 51) == 2
    tracker.forget("tok-1")
    assert tracker.overdue(T0 + 46, grace=5) == 0


def test_lateness_percentiles() -> None:
    tracker = SecretTracker(fixed_plan(0))
    for i in range(100):
        tracker.observe(f"tok-{i}", "t", T0, rfc(T0 + 60), seen=T0)
        tracker.observe(f"tok-{i}", "t", T0 + 1, rfc(T0 + 61), seen=T0 + (i + 1) / 10)
    summary = lateness(tracker.refreshes)
    assert summary["count"] == 100
    assert summary["p50_s"] == pytest.approx(5.0)
    assert summary["p99_s"] == pytest.approx(9.9)
    assert summary["max_s"] == pytest.approx(10.0)
    assert len(tracker.between(T0, T0 + 5.05)) == 50
    assert math.isnan(lateness([])["p99_s"])


def test_busiest_second_counts_full_seconds_of_the_window_only() -> None:
    issued = [T0 + 0.0] * 3 + [T0 + 1] * 1 + [T0 + 2] * 2 + [T0 + 3] * 9 + [T0 - 1] * 50
    got = busiest_second(issued, T0 - 0.5, T0 + 3.5)  # seconds T0, T0+1, T0+2
    assert got == {
        "seconds": 3,
        "count": 6,
        "mean": 2.0,
        "busiest": 3,
        "ratio": 1.5,
        "busiest_at_s": [[0, 3], [2, 2], [1, 1]],
    }
    assert math.isnan(busiest_second([], T0, T0 + 10)["ratio"])
    assert busiest_second([], T0, T0 + 0.5)["seconds"] == 0


def test_cpu_windows_skip_a_restart_between_samples() -> None:
    samples = [
        (0.0, 1, 10.0),
        (10.0, 1, 12.0),  # 0.2 core
        (20.0, 1, 18.0),  # 0.6 core
        (30.0, 2, 0.5),  # new process: no window across the restart
        (40.0, 2, 1.5),  # 0.1 core
        (50.0, 2, 99.0),  # outside the range asked for
    ]
    got = cpu_windows(samples, 0.0, 45.0)
    assert got["windows_s"] == 30.0
    assert got["mean_core"] == pytest.approx(9.0 / 30.0)
    assert got["max_core"] == pytest.approx(0.6)
    assert math.isnan(cpu_windows(samples[:1], 0.0, 45.0)["mean_core"])


def obtained_plan(token_id: str, obtained: float, expires_at: str) -> float:
    return obtained + 40


def test_the_plan_uses_the_operators_obtained_time_from_the_secret() -> None:
    tracker = SecretTracker(obtained_plan)
    # The operator asked at T0 - 3 (its call waited 3 s); the service stamped iat T0.
    tracker.observe(
        "tok-1", "tid", T0, rfc(T0 + 60), seen=T0 + 0.1, obtained=T0 - 3, declared=T0 + 37
    )
    assert tracker.plan_check() == {"compared": 1, "min_s": 0.0, "max_s": 0.0}
    tracker.observe("tok-1", "tid", T0 + 39, rfc(T0 + 99), seen=T0 + 39.5)
    [refresh] = tracker.refreshes
    assert refresh.planned == T0 + 37
    assert refresh.planned_from_record
    assert lateness(tracker.refreshes)["planned_from_record"] == 1


def test_without_the_operators_record_the_plan_starts_at_iat() -> None:
    tracker = SecretTracker(obtained_plan)
    tracker.observe("tok-1", "tid", T0, rfc(T0 + 60), seen=T0)
    tracker.observe("tok-1", "tid", T0 + 41, rfc(T0 + 101), seen=T0 + 41)
    [refresh] = tracker.refreshes
    assert refresh.planned == T0 + 40  # from iat
    assert not refresh.planned_from_record
    assert tracker.plan_check() == {"compared": 0}
