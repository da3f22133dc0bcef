"""Conditions: lastTransitionTime moves only on a flip; Reconciling/Stalled only while true."""

from datetime import timedelta

import pytest

from apitoken_operator.core.conditions import Signal, set_condition, summarize
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import ConditionStatus
from support.clock import T0

pytestmark = pytest.mark.unit

T1 = T0 + timedelta(minutes=5)
OK = Signal(reasons.TOKEN_READY, "fine")


def test_transition_time_kept_while_status_unchanged_even_if_reason_changes() -> None:
    first = set_condition((), reasons.READY, ConditionStatus.TRUE, OK, generation=1, now=T0)
    second = set_condition(
        first,
        reasons.READY,
        ConditionStatus.TRUE,
        Signal(reasons.TOKEN_READY, "other words"),
        generation=2,
        now=T1,
    )
    (cond,) = second
    assert cond.last_transition_time == T0
    assert (cond.message, cond.observed_generation) == ("other words", 2)


def test_transition_time_moves_when_status_flips() -> None:
    first = set_condition((), reasons.READY, ConditionStatus.TRUE, OK, generation=1, now=T0)
    (cond,) = set_condition(
        first,
        reasons.READY,
        ConditionStatus.FALSE,
        Signal(reasons.ACCESS_TOKEN_EXPIRED, "x"),
        generation=1,
        now=T1,
    )
    assert cond.last_transition_time == T1


def test_transition_time_has_whole_seconds() -> None:
    (cond,) = set_condition(
        (), reasons.READY, ConditionStatus.TRUE, OK, generation=1, now=T0.replace(microsecond=123)
    )
    assert cond.last_transition_time.microsecond == 0


@pytest.mark.parametrize(
    ("reconciling", "stalled", "types"),
    [
        (None, None, ["Ready"]),
        (Signal(reasons.REFRESHING, "r"), None, ["Ready", "Reconciling"]),
        (None, Signal(reasons.SECRET_CONFLICT, "c"), ["Ready", "Stalled"]),
    ],
    ids=["ready-only", "reconciling", "stalled"],
)
def test_summarize_keeps_abnormal_conditions_only_while_true(
    reconciling: Signal | None, stalled: Signal | None, types: list[str]
) -> None:
    before = summarize(
        (),
        ready=False,
        ready_signal=OK,
        reconciling=Signal(reasons.GENERATING, "g"),
        stalled=Signal(reasons.INVALID_SPEC, "s"),
        generation=1,
        now=T0,
    )
    after = summarize(
        before,
        ready=True,
        ready_signal=OK,
        reconciling=reconciling,
        stalled=stalled,
        generation=3,
        now=T1,
    )
    assert [c.type for c in after] == types
    assert all(c.observed_generation == 3 for c in after)
    assert all(c.status is ConditionStatus.TRUE for c in after)


def test_summarize_is_idempotent() -> None:
    once = summarize(
        (), ready=True, ready_signal=OK, reconciling=None, stalled=None, generation=1, now=T0
    )
    twice = summarize(
        once, ready=True, ready_signal=OK, reconciling=None, stalled=None, generation=1, now=T1
    )
    assert once == twice
