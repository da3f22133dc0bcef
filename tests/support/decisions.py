"""One table style for the decisions of both held-token policies (the ApiToken and the
workspace credential): a `Row` names a situation, builds its observation, passes the clock
(`now`) and says which actions and conditions the decision must answer; `rows` parametrizes a
test with the rows' ids and `check` asserts a decision against its row. Actions are described
in the held-token core's one vocabulary (`describe`), whichever policy asked for them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import pytest

from apitoken_operator.core import held_token as held
from apitoken_operator.core.apitoken.decide import Revoke
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import Condition

# A row's `reconciling` when the test does not look at that condition.
ANY = "ANY"
Situation = TypeVar("Situation")


@dataclass(frozen=True)
class Row(Generic[Situation]):
    id: str
    situation: Callable[[], Situation]
    now: datetime
    actions: list[str]
    # (status, reason) of each condition; ready None: not checked; stalled None: absent.
    ready: tuple[str, str] | None = None
    # None: absent; ANY: not checked, but absent when there is nothing to do.
    reconciling: tuple[str, str] | str | None = ANY
    stalled: tuple[str, str] | None = None


class _Status(Protocol):
    def condition(self, type_: str) -> Condition | None: ...


class _Decision(Protocol):
    @property
    def actions(self) -> Sequence[Any]: ...

    @property
    def status(self) -> Any: ...


def rows(table: Sequence[Row[Any]]) -> pytest.MarkDecorator:
    """Parametrize a test with `row`, one case per row, named by its id."""
    return pytest.mark.parametrize("row", table, ids=[r.id for r in table])


def describe(actions: Sequence[Any]) -> list[str]:
    """The actions as short strings: `Issue:<reason>`, `Import` (or `Import(retire=<id>)`),
    `Refresh:<id>`, `<disable|delete>:<id>`, `WriteSecret:<reason>`, `RemoveFinalizer`."""
    out = []
    for action in actions:
        match action:
            case held.Issue(reason=why):
                out.append(f"Issue:{why}")
            case held.Import(retire_token_id=None):
                out.append("Import")
            case held.Import(retire_token_id=old):
                out.append(f"Import(retire={old})")
            case held.Refresh(token_id=token_id):
                out.append(f"Refresh:{token_id}")
            case held.RetireToken(token_id=token_id, mode=mode):
                out.append(f"{mode.value}:{token_id}")
            case held.WriteSecret(reason=why):
                out.append(f"WriteSecret:{why}")
            case held.RemoveFinalizer():
                out.append("RemoveFinalizer")
            case Revoke():
                out.append("Revoke")  # the ApiToken's own, in refresh-only mode
            case _:
                raise AssertionError(f"not an action of the held-token core: {action!r}")
    return out


def condition(status: _Status, type_: str) -> tuple[str, str] | None:
    """(status, reason) of a condition, None when absent."""
    c = status.condition(type_)
    return None if c is None else (c.status.value, c.reason)


def check(decision: _Decision, row: Row[Any], *, generation: int = 1) -> None:
    status = decision.status
    assert describe(decision.actions) == row.actions
    if row.ready is not None:
        assert condition(status, reasons.READY) == row.ready
    if row.reconciling != ANY:
        assert condition(status, reasons.RECONCILING) == row.reconciling
    elif not decision.actions:
        assert condition(status, reasons.RECONCILING) is None
    assert condition(status, reasons.STALLED) == row.stalled
    assert status.observed_generation == generation


__all__ = ["ANY", "Row", "check", "condition", "describe", "rows"]
