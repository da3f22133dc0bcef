"""spec.rolloutRestartTargets on the real apiserver: a re-issue sets apitoken.dev/restartedAt
on each target's pod template once; access-token refreshes (every few seconds here) never do.
No node is needed: the annotation on the Deployment object is what `kubectl rollout restart`
changes too, and the Deployment controller rolls out any template change."""

from __future__ import annotations

import time
from typing import Any

import pytest
from lightkube import Client

from apitoken_operator.kube.resources import ApiToken
from support.operator import (
    Workspace,
    access_token_schedule,
    api_token,
    events_of,
    eventually,
    merge_patch,
    ready_token,
    status_of,
)
from support.workloads import TemplateHistory, create_workload, restarted_at

pytestmark = pytest.mark.e2e

TARGETS = [
    {"kind": "Deployment", "name": "web"},
    {"kind": "StatefulSet", "name": "db"},
    {"kind": "DaemonSet", "name": "not-there"},  # skipped: nothing runs the old token
]


def _status(kube: Client, ns: str) -> dict[str, Any]:
    return status_of(kube.get(ApiToken, "tok", namespace=ns))


def _refreshes(kube: Client, ns: str, count: int) -> None:
    """Wait until the access token was refreshed `count` times (same token id)."""
    seen = {access_token_schedule(kube, ns)["refreshedAt"]}
    token_id = _status(kube, ns).get("tokenId")

    def more() -> bool:
        status = _status(kube, ns)
        assert status.get("tokenId") == token_id, "re-issued while waiting for refreshes"
        seen.add(access_token_schedule(kube, ns)["refreshedAt"])
        return len(seen) > count

    eventually(f"{count} access-token refreshes", more, timeout=30)


def test_reissue_restarts_each_target_once_and_refreshes_never(
    kube: Client, workspace: Workspace
) -> None:
    ns = workspace.namespace
    create_workload(kube, ns, "Deployment", "web")
    create_workload(kube, ns, "StatefulSet", "db")
    history = TemplateHistory(kube, ns, "web")
    try:
        api_token(kube, ns, rolloutRestartTargets=TARGETS)
        first = status_of(ready_token(kube, ns))
        # The first token is recorded without a restart: the workloads start after it exists.
        eventually(
            "the first token recorded",
            lambda: (
                (_status(kube, ns).get("rolloutRestart") or {}).get("tokenId") == first["tokenId"]
            ),
        )
        _refreshes(kube, ns, 2)
        assert restarted_at(kube, ns, "Deployment", "web") is None
        assert restarted_at(kube, ns, "StatefulSet", "db") is None

        merge_patch(kube, ns, {"metadata": {"annotations": {"apitoken.dev/reissue": "rotate-1"}}})

        def restarted_for_new_token() -> dict[str, Any] | None:
            status = _status(kube, ns)
            rollout = status.get("rolloutRestart") or {}
            new = status.get("tokenId")
            return rollout if new != first["tokenId"] and rollout.get("tokenId") == new else None

        rollout = eventually("the restart for the re-issued token", restarted_for_new_token)
        value = restarted_at(kube, ns, "Deployment", "web")
        assert value is not None and value == rollout["restartedAt"]
        assert restarted_at(kube, ns, "StatefulSet", "db") == value
        # Refreshes of the new token, and every write they bring, leave the templates alone.
        _refreshes(kube, ns, 2)
        time.sleep(1)  # the watch's last events
        assert restarted_at(kube, ns, "Deployment", "web") == value
        assert history.values == [None, value], history.values
    finally:
        history.stop()
    events = [e for e in events_of(kube, ns) if e.reason == "RolloutRestarted"]
    assert len(events) == 1 and (events[0].count or 1) == 1, events
    message = events[0].message or ""
    assert "Deployment/web, StatefulSet/db" in message
    assert "DaemonSet/not-there not found" in message
