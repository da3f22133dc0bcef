"""The token service down: Ready stays True while the Secret's access token is valid, turns
False once it expired, and recovers (the process frozen with SIGSTOP, so calls time out); a
deletion waits with a clear condition until an admin releases it with the abandon annotation
(the process stopped, so calls are refused)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube import Client

from apitoken_operator.kube.resources import ApiToken
from apitoken_operator.providers.answers import parse_rfc3339
from support.operator import (
    OperatorTest,
    abandon,
    access_token_schedule,
    api_token,
    condition,
    eventually,
    get_api_token,
    gone,
    ready_token,
    reason,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.e2e

# Longer-lived access tokens than the other modules, so the window between a failed refresh
# and expiry is several seconds wide; calls time out after 1 s.
ACCESS_TOKEN_TTL = 12


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    return ACCESS_TOKEN_TTL


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return {"APITOKEN_OPERATOR_HTTP_TIMEOUT": "1s"}


@contextlib.contextmanager
def service_stopped(service: RunningTokenService) -> Iterator[None]:
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(service.process.pid, signal.SIGCONT)


def test_ready_holds_while_the_access_token_is_valid(kube: Client, op: OperatorTest) -> None:
    ns = op.namespace
    # Refresh at half the access token's life (minus jitter): the failure is recorded seconds
    # before expiry, even with three calls timing out in a run.
    api_token(kube, ns, refreshPercent=50)
    ready_token(kube, ns)
    with service_stopped(op.service):

        def failed() -> tuple[Any, datetime] | None:
            obj = get_api_token(kube, ns)
            seen_at = datetime.now(UTC)
            attempts = status_of(obj).get("failedRefreshAttempts", 0)
            return (obj, seen_at) if attempts >= 1 else None

        obj, seen_at = eventually("a failed refresh", failed, timeout=ACCESS_TOKEN_TTL + 5)
        status = status_of(obj)
        expires = parse_rfc3339(access_token_schedule(kube, ns)["expiresAt"])
        assert seen_at < expires, "the failure was seen only after expiry: widen the window"
        assert condition(obj, "Ready") == "True"
        assert condition(obj, "Reconciling") == "True"
        # The failure, or the retry under way once its backoff passed.
        assert reason(obj, "Reconciling") in ("ServiceUnreachable", "Refreshing")
        assert status["lastFailureReason"] == "ServiceUnreachable"

        def expired() -> Any:
            obj = get_api_token(kube, ns)
            return obj if condition(obj, "Ready") == "False" else None

        obj = eventually("Ready=False after expiry", expired, timeout=ACCESS_TOKEN_TTL + 5)
        assert reason(obj) == "ServiceUnreachable"
        assert datetime.now(UTC) >= expires
    # Back up: the next retry (backoff capped at 4 s) refreshes and Ready returns.
    obj = ready_token(kube, ns, timeout=20)
    assert status_of(obj).get("failedRefreshAttempts", 0) == 0


def test_deletion_waits_for_the_service_and_abandon_releases_it(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    created = api_token(kube, ns)
    tid = status_of(ready_token(kube, ns)).get("tokenId")
    # A real outage, not SIGSTOP: a frozen server would still accept the operator's DELETE and
    # run it after the outage, and the token would be gone for reasons this test is not about.
    with op.service.down():
        kube.delete(ApiToken, "tok", namespace=ns)

        def waiting() -> Any:
            obj = get_api_token(kube, ns)
            return obj if condition(obj, "Reconciling") == "True" else None

        obj = eventually("the deletion to wait", waiting, timeout=20)
        assert obj.metadata.deletionTimestamp is not None
        assert reason(obj) == "CleaningUp"
        assert obj.metadata.finalizers == ["apitoken.dev/finalizer"]
        abandon(kube, ns)

        eventually(
            "the abandoned ApiToken to be released",
            lambda: gone(kube, ApiToken, "tok", ns),
            timeout=20,
        )
    # Released without cleanup: the token is still there (valid until it expires).
    assert [(t["id"], t["status"]) for t in op.admin.tokens_of(created.metadata.uid)] == [
        (tid, "active")
    ]
