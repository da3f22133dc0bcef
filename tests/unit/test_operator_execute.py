"""Running decisions: the real HTTP clients against a token service faked with MockTransport,
and an in-memory Secret writer. Checks the order of effects and the refresh critical section."""

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
)
from apitoken_operator.execution.held_token import TokenLocks
from support.clock import T0
from support.held_tokens import UID, CredentialHarness, Harness

pytestmark = pytest.mark.unit


def ready(outcome: Any) -> tuple[str, str]:
    cond = outcome.decision.status.condition(reasons.READY)
    return (cond.status.value, cond.reason)


async def test_generate_then_refresh_then_nothing() -> None:
    h = Harness.new()
    first = await h.run()
    assert [e.reason for e in first.events] == ["Generated"]
    assert first.status_changed and first.decision.actions == ()
    assert ready(first) == ("True", reasons.TOKEN_READY)
    assert h.service.tokens["tok-1"]["externalRef"] == UID
    assert h.service.tokens["tok-1"]["name"] == "apps/billing"
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-1"
    assert first.decision.requeue_at == T0 + timedelta(minutes=45)

    h.clock.now = T0 + timedelta(minutes=45)
    second = await h.run()
    assert second.events == ()  # routine refreshes post no events
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-2"
    assert h.obs.secret.refreshed_at == h.clock.now
    # A routine refresh changes nothing the status reports: no status write.
    assert not second.status_changed

    h.clock.now += timedelta(minutes=1)
    writes = len(h.secrets.written)
    third = await h.run()
    assert not third.status_changed and len(h.secrets.written) == writes


@pytest.mark.parametrize(
    ("failures", "written"),
    [(2, True), (10, False)],
    ids=["retried-from-memory", "failing-for-good-raises"],
)
async def test_a_failed_secret_write_after_a_refresh_never_refreshes_again(
    failures: int, written: bool
) -> None:
    h = Harness.new()
    await h.run()
    h.clock.now = T0 + timedelta(minutes=45)
    h.secrets.failures = failures
    before = h.service.calls.count("POST /oauth2/token")
    if written:
        await h.run()
        assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-2"
    else:
        with pytest.raises(ConnectionError):
            await h.run()
    assert h.service.calls.count("POST /oauth2/token") == before + 1  # refreshed once


async def test_service_down_keeps_ready_backs_off_and_warns_without_values() -> None:
    h = Harness.new()
    await h.run()
    h.clock.now = T0 + timedelta(minutes=45)
    h.service.down = True
    outcome = await h.run(list_tokens=False)
    assert ready(outcome) == ("True", reasons.TOKEN_READY)
    status = outcome.decision.status
    assert (status.failed_refresh_attempts, status.last_failure_reason) == (
        1,
        reasons.SERVICE_UNREACHABLE,
    )
    assert [e.type for e in outcome.events] == ["Warning"]
    assert outcome.decision.requeue_at is not None and outcome.decision.requeue_at > h.clock.now
    text = json.dumps(status.to_json()) + repr(outcome.events)
    assert "rt-value" not in text and "at-value" not in text

    h.clock.now = T0 + timedelta(minutes=61)  # access token expired meanwhile
    expired = await h.run(list_tokens=False)
    assert ready(expired) == ("False", reasons.SERVICE_UNREACHABLE)


async def test_reissue_writes_the_new_secret_before_retiring_the_old_token() -> None:
    h = Harness.new()
    await h.run()
    h.obs = dataclasses.replace(
        h.obs,
        token=dataclasses.replace(
            h.obs.token, spec=h.obs.token.spec.model_copy(update={"lifetime_days": 30})
        ),
    )
    h.clock.now = T0 + timedelta(minutes=5)
    outcome = await h.run()
    assert [e.reason for e in outcome.events] == ["Reissued", "Deleted"]
    assert "tok-1" not in h.service.tokens and h.service.tokens["tok-2"]["status"] == "active"
    create = h.service.calls.index("POST /api/v1/workspaces/w1/tokens", 1)
    delete = h.service.calls.index("DELETE /api/v1/workspaces/w1/tokens/tok-1")
    assert create < delete
    assert h.obs.secret is not None and h.obs.secret.token_id == "tok-2"
    assert outcome.decision.status.issued_spec_hash is not None
    assert outcome.decision.status.issued_spec_hash.endswith(".30")


async def test_token_disabled_outside_is_reissued() -> None:
    h = Harness.new()
    await h.run()
    h.service.tokens["tok-1"]["status"] = "disabled"
    h.clock.now = T0 + timedelta(minutes=45)
    rejected = await h.run(list_tokens=False)
    assert rejected.decision.status.last_failure_reason == reasons.REFRESH_TOKEN_REJECTED
    h.clock.now += timedelta(seconds=10)
    healed = await h.run()
    assert [e.reason for e in healed.events] == ["Reissued", "Deleted"]
    assert ready(healed) == ("True", reasons.TOKEN_READY)
    assert healed.decision.status.failed_refresh_attempts == 0


async def test_crash_leftovers_are_swept() -> None:
    h = Harness.new()
    h.secrets.failures = 10  # the Secret write after generating fails for good ("crash")
    with pytest.raises(ConnectionError):
        await h.run()
    assert h.service.tokens["tok-1"]["status"] == "active"
    h.secrets.failures = 0
    outcome = await h.run()
    assert [e.reason for e in outcome.events] == ["Generated", "Deleted"]
    assert set(h.service.tokens) == {"tok-2"}


async def test_disable_then_delete_with_policy_disable_releases_the_finalizer() -> None:
    h = Harness.new({"deletionPolicy": "Disable"})
    await h.run()
    h.obs = dataclasses.replace(
        h.obs,
        token=dataclasses.replace(
            h.obs.token, spec=h.obs.token.spec.model_copy(update={"disabled": True})
        ),
    )
    disabled = await h.run()
    assert h.service.tokens["tok-1"]["status"] == "disabled"
    assert h.obs.secret is not None and set(h.obs.secret.data) == {"token_type", "expires_at"}
    assert ready(disabled) == ("False", reasons.DISABLED)
    h.obs = dataclasses.replace(h.obs, token=dataclasses.replace(h.obs.token, deleting=True))
    gone = await h.run()
    assert gone.finalizer_released
    assert h.service.tokens["tok-1"]["status"] == "disabled"  # Disable policy keeps it listed


async def test_locks_are_per_token() -> None:
    locks = TokenLocks()
    assert locks.for_uid("a") is locks.for_uid("a")
    assert locks.for_uid("a") is not locks.for_uid("b")
    async with locks.for_uid("a"):
        locks.forget("a")  # held: kept
        assert locks.for_uid("a").locked()
    locks.forget("a")
    assert not locks.for_uid("a").locked()


async def test_token_in_the_previous_workspace_is_retired_there_even_after_a_failure() -> None:
    h = Harness.new()
    await h.run()
    spec = ApiTokenSpec.model_validate({"workspaceRef": {"name": "other"}})
    h.obs = dataclasses.replace(h.obs, token=dataclasses.replace(h.obs.token, spec=spec))
    h.clock.now = T0 + timedelta(minutes=5)
    moved = await h.run()
    assert [e.reason for e in moved.events] == ["Reissued", "Failed"]
    assert "TokenWorkspace/main is not available" in moved.events[-1].message
    assert [r.id for r in moved.decision.status.retiring_tokens] == ["tok-1"]
    assert h.service.tokens["tok-1"]["status"] == "active"

    asked: list[str] = []

    async def management_for(workspace: str) -> Any:
        asked.append(workspace)
        return h.ports.management  # the fake serves both workspaces

    h.ports = dataclasses.replace(h.ports, management_for=management_for)
    h.clock.now += timedelta(minutes=1)  # past the backoff
    retried = await h.run(list_tokens=False)
    assert asked == ["TokenWorkspace/main"]
    assert [e.reason for e in retried.events] == ["Deleted"]
    assert retried.decision.status.retiring_tokens == ()
    assert "tok-1" not in h.service.tokens


# The operator's own workspace credential --------------------------------------------------


async def test_bootstrap_is_used_once_then_the_rotated_credential() -> None:
    h = CredentialHarness.new()
    first = await h.run()
    assert [e.reason for e in first.events] == ["Bootstrapped"]
    assert first.decision.usable
    status = first.decision.status
    assert (status.user, status.credential_token_id) == ("operator", "tok-1")
    assert status.credential_secret_name == "main-apitoken-credential"
    assert h.secrets.written[-1]["metadata"]["namespace"] == "apps"
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-2"
    calls = h.service.calls.count("POST /oauth2/token")

    # The same bootstrap value re-applied (GitOps) is never presented again.
    h.clock.now += timedelta(minutes=10)
    again = await h.run()
    assert h.service.calls.count("POST /oauth2/token") == calls
    assert again.events == () and not again.status_changed
    text = json.dumps(again.decision.status.to_json())
    assert "rt-value" not in text and "at-value" not in text


async def test_credential_is_renewed_before_it_expires_and_the_old_one_disabled() -> None:
    h = CredentialHarness.new()
    await h.run()
    h.clock.now = T0 + timedelta(days=21)  # seeded for 30 days: renew 10 days before
    outcome = await h.run()
    assert [e.reason for e in outcome.events] == ["CredentialRenewed"]
    assert h.service.tokens["tok-1"]["status"] == "disabled"
    assert h.service.tokens["tok-2"]["externalRef"] == "ws-uid"
    assert h.service.tokens["tok-2"]["name"] == "apitoken-operator/apps/main"
    assert outcome.decision.status.credential_token_id == "tok-2"
    assert outcome.decision.usable and outcome.decision.actions == ()


async def test_rejected_bootstrap_is_not_presented_twice() -> None:
    h = CredentialHarness.new()
    h.bootstrap.value = "not-a-valid-refresh-token"
    first = await h.run()
    assert [e.type for e in first.events] == ["Warning"]
    h.clock.now += timedelta(hours=1)
    calls = h.service.calls.count("POST /oauth2/token")
    second = await h.run()
    assert h.service.calls.count("POST /oauth2/token") == calls
    stalled = second.decision.status.condition(reasons.STALLED)
    assert stalled is not None and stalled.reason == reasons.CREDENTIALS_MISSING
    assert not second.decision.usable
