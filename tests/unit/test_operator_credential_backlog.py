"""A workspace credential the run could not write is kept for the next run, like an ApiToken's
values (invariant 2 across runs): the next run writes it before it decides anything and never
refreshes with the old refresh token; the token it replaced is disabled only once it is written;
it is dropped when the Secret is no longer the workspace's."""

import dataclasses
from datetime import timedelta

import pytest

from apitoken_operator.core.managed_secret import observe
from apitoken_operator.core.workspace.credential import may_write_held_credential
from apitoken_operator.execution.held_token import Backlog, Unwritten
from support.clock import T0
from support.held_tokens import CredentialHarness, refresh_not_written

pytestmark = pytest.mark.unit

REFRESHES = "POST /oauth2/token"


def kept(backlog: Backlog) -> Unwritten:
    assert backlog.pending is not None
    return backlog.pending


async def test_a_refreshed_credential_not_written_is_written_next_time_without_a_refresh() -> None:
    h = CredentialHarness.new()
    # The first run bootstraps (rt-value-2 in the Secret), the refresh is not written.
    backlog = await refresh_not_written(h, T0 + timedelta(minutes=50))
    refreshes = h.service.calls.count(REFRESHES)
    assert observe(kept(backlog).manifest).data["refresh_token"] == "rt-value-3"
    # Still failing: kept, and the old refresh token is not presented again.
    h.clock.now += timedelta(seconds=30)
    with pytest.raises(ConnectionError):
        await h.run(backlog=backlog)
    assert h.service.calls.count(REFRESHES) == refreshes
    h.secrets.failures = 0
    outcome = await h.run(backlog=backlog)
    assert backlog.pending is None
    assert h.service.calls.count(REFRESHES) == refreshes
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-3"
    assert outcome.decision.usable and outcome.decision.actions == ()
    assert outcome.decision.status.last_refresh_time == T0 + timedelta(minutes=50)
    # The chain goes on from the written credential.
    h.clock.now = T0 + timedelta(minutes=100)
    await h.run(backlog=backlog)
    assert h.service.calls.count(REFRESHES) == refreshes + 1
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-4"


async def test_a_renewal_not_written_disables_the_old_token_only_once_written() -> None:
    h = CredentialHarness.new()
    backlog = Backlog()
    await h.run(backlog=backlog)
    # Seeded for 30 days: renewal due at day 20. A refresh just before, so that at day 20 the
    # renewal is all there is to do.
    h.clock.now = T0 + timedelta(days=19, hours=23, minutes=30)
    await h.run(backlog=backlog)
    h.secrets.failures = 100
    h.clock.now = T0 + timedelta(days=20, minutes=5)
    with pytest.raises(ConnectionError):
        await h.run(backlog=backlog)
    pending = kept(backlog)
    assert pending.retire_token_ids == ("tok-1",)
    assert [e.reason for e in pending.events] == ["CredentialRenewed"]
    # The old token still works: it is the only credential the Secret holds.
    assert h.service.tokens["tok-1"]["status"] == "active"
    assert h.service.tokens["tok-2"]["status"] == "active"
    h.secrets.failures = 0
    outcome = await h.run(backlog=backlog)
    assert backlog.pending is None
    assert [e.reason for e in outcome.events] == ["CredentialRenewed"]
    assert h.service.tokens["tok-1"]["status"] == "disabled"
    assert outcome.decision.status.credential_token_id == "tok-2"
    assert "tok-3" not in h.service.tokens  # no second renewal


async def test_a_kept_credential_never_overwrites_a_secret_that_is_not_the_workspaces() -> None:
    h = CredentialHarness.new()
    backlog = await refresh_not_written(h, T0 + timedelta(minutes=50))
    h.secrets.failures = 0
    assert h.obs.secret is not None
    foreign = dataclasses.replace(h.obs.secret, labels={"owner": "someone-else"})
    h.obs = dataclasses.replace(h.obs, secret=foreign)
    assert not may_write_held_credential(h.obs)
    writes = len(h.secrets.written)
    await h.run(backlog=backlog)
    assert backlog.pending is None
    assert h.secrets.written[writes:] == []
