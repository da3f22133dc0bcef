"""No token is minted that no Secret can hold: while the ApiToken's namespace is being deleted
the core neither generates, re-issues nor imports (creating a Secret in a terminating namespace
is forbidden); a token whose Secret still exists keeps being refreshed."""

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from apitoken_operator.core.apitoken.decide import decide
from apitoken_operator.core.held_token import Issue, Refresh
from apitoken_operator.crd import reasons
from apitoken_operator.kube.objects import namespace_state
from support.held_tokens import POLICY, Harness
from unit.test_operator_write_failures import FakeApiServer, kube_client

pytestmark = pytest.mark.unit

CREATES = "POST /api/v1/workspaces/w1/tokens"


def terminating(h: Harness) -> None:
    h.obs = dataclasses.replace(h.obs, namespace_terminating=True)


def reconciling_reason(h: Harness) -> str | None:
    condition = h.obs.token.status.condition(reasons.RECONCILING)
    return condition.reason if condition is not None else None


async def test_no_token_is_generated_in_a_terminating_namespace() -> None:
    h = Harness.new()
    terminating(h)
    decision = decide(h.obs, h.clock(), POLICY)
    assert not any(isinstance(a, Issue) for a in decision.actions)
    assert decision.requeue_at == h.clock() + POLICY.recheck_interval
    await h.run()
    assert h.service.calls.count(CREATES) == 0 and h.secrets.written == []
    assert reconciling_reason(h) == reasons.NAMESPACE_TERMINATING
    ready = h.obs.token.status.condition(reasons.READY)
    assert ready is not None and ready.status == "False"


async def test_a_secret_removed_by_the_namespace_deletion_is_not_reissued() -> None:
    h = Harness.new()
    await h.run()
    assert h.service.calls.count(CREATES) == 1
    h.clock.now += timedelta(minutes=1)
    h.obs = dataclasses.replace(h.obs, secret=None)
    # Not terminating: the deleted Secret is re-issued (the control).
    control = decide(h.obs, h.clock(), POLICY)
    assert any(isinstance(a, Issue) and a.reason == reasons.SECRET_DELETED for a in control.actions)
    terminating(h)
    decision = decide(h.obs, h.clock(), POLICY)
    assert not any(isinstance(a, Issue) for a in decision.actions)
    writes = len(h.secrets.written)
    await h.run()
    assert h.service.calls.count(CREATES) == 1
    assert h.secrets.written[writes:] == []
    assert reconciling_reason(h) == reasons.NAMESPACE_TERMINATING


async def test_a_token_whose_secret_exists_is_still_refreshed() -> None:
    h = Harness.new()
    await h.run()
    h.clock.now += timedelta(minutes=50)
    terminating(h)
    decision = decide(h.obs, h.clock(), POLICY)
    assert [type(a) for a in decision.actions] == [Refresh]
    await h.run()
    assert h.service.calls.count("POST /oauth2/token") == 1
    assert reconciling_reason(h) is None


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        (
            {"metadata": {"name": "ns", "labels": {"team": "a"}}, "status": {"phase": "Active"}},
            False,
        ),
        ({"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}}, True),
        (
            {
                "metadata": {"name": "ns", "deletionTimestamp": "2026-11-29T03:00:00Z"},
                "status": {"phase": "Active"},
            },
            True,
        ),
        (None, True),  # gone
    ],
)
async def test_namespace_state(namespace: dict[str, Any] | None, expected: bool) -> None:
    api = FakeApiServer()
    if namespace is not None:
        api.put("/api/v1/namespaces/ns", namespace)
    state = await namespace_state(kube_client(api), "ns")
    assert state.terminating is expected
    assert state.labels == ((namespace or {}).get("metadata") or {}).get("labels", {})
