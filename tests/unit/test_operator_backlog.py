"""Values a run could not write are kept for the next run (invariant 2 across runs): the next
run writes them before it decides anything and never refreshes with the old refresh token; they
are dropped when the ApiToken goes away or the Secret is no longer ours. (The failure time the
backoff is measured from is pinned for both policies in test_operator_held_token.)"""

import dataclasses
from datetime import timedelta

import pytest

from apitoken_operator.core.managed_secret import observe
from apitoken_operator.crd import reasons
from apitoken_operator.execution.held_token import Backlog, TokenLocks, Unwritten
from support.clock import T0
from support.held_tokens import Harness, refresh_not_written

pytestmark = pytest.mark.unit

REFRESHES = "POST /oauth2/token"


def kept(backlog: Backlog) -> Unwritten | None:
    return backlog.pending


async def run(h: Harness, backlog: Backlog) -> None:
    """One run as token_runs does it, with the token's backlog; state kept only on success."""
    await h.run(list_tokens=False, backlog=backlog)


async def refresh_that_cannot_be_written() -> tuple[Harness, Backlog]:
    h = Harness.new()
    backlog = await refresh_not_written(h, T0 + timedelta(minutes=45))
    assert h.service.calls.count(REFRESHES) == 1
    pending = kept(backlog)
    assert pending is not None
    assert observe(pending.manifest).data["refresh_token"] == "rt-value-2"
    return h, backlog


async def test_the_next_run_writes_the_kept_values_and_does_not_refresh() -> None:
    h, backlog = await refresh_that_cannot_be_written()
    h.clock.now += timedelta(seconds=30)
    # Still failing: kept, and still no second refresh.
    with pytest.raises(ConnectionError):
        await run(h, backlog)
    assert h.service.calls.count(REFRESHES) == 1 and kept(backlog) is not None
    h.secrets.failures = 0
    await run(h, backlog)
    assert kept(backlog) is None
    assert h.service.calls.count(REFRESHES) == 1
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-2"
    status = h.obs.token.status
    assert h.obs.secret.refreshed_at == T0 + timedelta(minutes=45)
    assert status.condition(reasons.READY) is not None
    # And the chain goes on from the written values.
    h.clock.now = T0 + timedelta(minutes=90)
    await run(h, backlog)
    assert h.service.calls.count(REFRESHES) == 2
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-3"


async def test_kept_values_are_dropped_when_the_apitoken_is_deleted() -> None:
    h, backlog = await refresh_that_cannot_be_written()
    h.secrets.failures = 0
    h.obs = dataclasses.replace(h.obs, token=dataclasses.replace(h.obs.token, deleting=True))
    writes = len(h.secrets.written)
    await run(h, backlog)
    assert kept(backlog) is None
    assert all(
        observe(w).data.get("refresh_token") != "rt-value-2" for w in h.secrets.written[writes:]
    )


async def test_kept_values_never_overwrite_a_secret_that_is_not_ours() -> None:
    h, backlog = await refresh_that_cannot_be_written()
    h.secrets.failures = 0
    assert h.obs.secret is not None
    foreign = dataclasses.replace(h.obs.secret, labels={"owner": "someone-else"})
    h.obs = dataclasses.replace(h.obs, secret=foreign)
    writes = len(h.secrets.written)
    await run(h, backlog)
    assert kept(backlog) is None
    assert h.secrets.written[writes:] == []


def test_locks_keep_one_backlog_per_token_until_forgotten() -> None:
    locks = TokenLocks()
    assert locks.backlog("a") is locks.backlog("a")
    assert locks.backlog("a") is not locks.backlog("b")
    locks.backlog("a").pending = None
    locks.forget("a")
    assert locks.backlog("a") is not None
