"""Values a run could not write are kept for the next run (invariant 2 across runs): the next
run writes them before it decides anything and never refreshes with the old refresh token; they
are dropped when the ApiToken goes away or the Secret is no longer ours. Also: the backoff is
measured from a failure time rounded up, so retries never come early."""

import dataclasses
from datetime import timedelta

import pytest

from apitoken_operator.core.apitoken.decide import failed_state
from apitoken_operator.core.managed_secret import observe
from apitoken_operator.crd import reasons
from apitoken_operator.execution.apitoken import reconcile_once
from apitoken_operator.execution.held_token import Backlog, TokenLocks, Unwritten
from support.held_tokens import NO_WAIT, POLICY, T0, Harness

pytestmark = pytest.mark.unit

REFRESHES = "POST /oauth2/token"


def kept(backlog: Backlog) -> Unwritten | None:
    return backlog.pending


async def run(h: Harness, backlog: Backlog) -> None:
    """One run as token_runs does it, with the token's backlog; state kept only on success."""
    outcome = await reconcile_once(
        h.obs, h.ports, policy=POLICY, clock=h.clock, retry=NO_WAIT, backlog=backlog
    )
    secret = observe(h.secrets.written[-1]) if h.secrets.written else None
    token = dataclasses.replace(outcome.observation.token, status=outcome.decision.status)
    h.obs = dataclasses.replace(h.obs, token=token, secret=secret, service_tokens=None)


async def refresh_that_cannot_be_written() -> tuple[Harness, Backlog]:
    h = Harness.new()
    backlog = Backlog()
    await run(h, backlog)
    h.clock.now = T0 + timedelta(minutes=45)
    h.secrets.failures = 100
    with pytest.raises(ConnectionError):
        await run(h, backlog)
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
    assert status.last_refresh_time == T0 + timedelta(minutes=45)
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


def test_failure_time_is_rounded_up_so_the_backoff_never_comes_early() -> None:
    h = Harness.new()
    at = T0 + timedelta(seconds=7, milliseconds=300)
    status = failed_state(h.obs, reasons.SERVICE_ERROR, "503", at)
    assert status.last_failure_time == T0 + timedelta(seconds=8)
    whole = failed_state(h.obs, reasons.SERVICE_ERROR, "503", T0)
    assert whole.last_failure_time == T0
