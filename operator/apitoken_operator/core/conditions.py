"""kstatus-compatible conditions: Ready always present, Reconciling and Stalled only while true.

`lastTransitionTime` moves only when a condition's status flips, so that re-running the
reconcile with nothing new yields the same conditions and no status write.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import Condition, ConditionStatus

_ORDER = (reasons.READY, reasons.RECONCILING, reasons.STALLED)


@dataclass(frozen=True)
class Signal:
    """A condition's content before it gets its times: reason and message."""

    reason: str
    message: str


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    signal: Signal,
    *,
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """Set one condition, keeping its lastTransitionTime unless its status flips."""
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    new = Condition(
        type=type_,
        status=status,
        reason=signal.reason,
        message=signal.message,
        last_transition_time=since.replace(microsecond=0),
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != type_]
    return _sorted([*rest, new])


def remove_condition(conditions: Sequence[Condition], type_: str) -> tuple[Condition, ...]:
    return _sorted([c for c in conditions if c.type != type_])


def _sorted(conditions: Sequence[Condition]) -> tuple[Condition, ...]:
    def key(c: Condition) -> tuple[int, str]:
        return (_ORDER.index(c.type) if c.type in _ORDER else len(_ORDER), c.type)

    return tuple(sorted(conditions, key=key))


def summarize(
    conditions: Sequence[Condition],
    *,
    ready: bool,
    ready_signal: Signal,
    reconciling: Signal | None,
    stalled: Signal | None,
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """The three conditions of a resource from one reconcile's verdict."""
    status = ConditionStatus.TRUE if ready else ConditionStatus.FALSE
    out = set_condition(
        conditions, reasons.READY, status, ready_signal, generation=generation, now=now
    )
    for type_, signal in ((reasons.RECONCILING, reconciling), (reasons.STALLED, stalled)):
        if signal is None:
            out = remove_condition(out, type_)
        else:
            out = set_condition(
                out, type_, ConditionStatus.TRUE, signal, generation=generation, now=now
            )
    return out
