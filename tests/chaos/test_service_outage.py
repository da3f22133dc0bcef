"""Issue 11 item 9: the token service down longer than an access token lives.

tests/e2e/test_operator_outage.py freezes the service for one ApiToken (Ready holds while the
access token is valid, turns False after); this stops it for real (connections refused) for
longer than an access token lives, under several ApiTokens, and starts it again on the same port
and database. Meanwhile the Secrets keep their last values and the conditions say why
(ServiceUnreachable); afterwards nothing was re-issued (same token id, no extra token at the
service), every ApiToken is Ready with a fresh access token within 30 s of the return, and no
refresh token was replayed. `make chaos` repeats the outage CHAOS_ROUNDS times in a row (once
in `make test`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube import Client

from apitoken_operator.crd.reasons import SERVICE_UNREACHABLE
from apitoken_operator.providers.answers import parse_rfc3339
from support import chaos
from support.operator import (
    OperatorTest,
    access_token_schedule,
    api_token,
    condition,
    eventually,
    get_api_token,
    reason,
    secret_data,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

ACCESS_TOKEN_TTL = 8
TOKENS = 3
# Down for longer than an access token lives, with margin for the last refresh before the stop.
OUTAGE_S = 2 * ACCESS_TOKEN_TTL + 2
RECOVERY_S = 30


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    return ACCESS_TOKEN_TTL


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    # Calls fail fast while the service is down (refused anyway; a short timeout bounds retries).
    return {"APITOKEN_OPERATOR_HTTP_TIMEOUT": "1s"}


def expires_at(kube: Client, namespace: str, name: str) -> datetime:
    """When the access token in the ApiToken's Secret expires (the Secret's expires_at)."""
    return parse_rfc3339(access_token_schedule(kube, namespace, name)["expiresAt"])


def test_service_down_past_access_token_life_keeps_secrets_and_recovers(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    names = [f"t{i}" for i in range(TOKENS)]
    created = {n: api_token(kube, ns, n) for n in names}

    def all_ready() -> dict[str, Any] | None:
        objs = {n: get_api_token(kube, ns, n) for n in names}
        return objs if all(condition(o, "Ready") == "True" for o in objs.values()) else None

    before = eventually("every ApiToken Ready", all_ready, timeout=60)
    token_ids = {n: status_of(before[n])["tokenId"] for n in names}
    at_service = {
        n: sorted(t["id"] for t in op.admin.tokens_of(created[n].metadata.uid)) for n in names
    }
    assert all(at_service[n] == [token_ids[n]] for n in names), at_service

    for _ in range(chaos.ROUNDS):
        with op.service.down():
            stopped = time.monotonic()
            # No refresh can succeed from here on: these are the last values.
            last = {n: secret_data(kube, ns, n) or {} for n in names}
            assert all(v.get("access_token") for v in last.values())

            def all_expired_and_said_why() -> dict[str, Any] | None:
                objs = {n: get_api_token(kube, ns, n) for n in names}
                done = all(
                    condition(o, "Ready") == "False" and reason(o) == SERVICE_UNREACHABLE
                    for o in objs.values()
                )
                return objs if done else None

            down = eventually(
                "Ready=False (ServiceUnreachable) on every ApiToken",
                all_expired_and_said_why,
                timeout=OUTAGE_S + 10,
            )
            now = datetime.now(UTC)
            for n, obj in down.items():
                status = status_of(obj)
                assert expires_at(kube, ns, n) <= now, (
                    f"{n}: Ready=False before its access token expired"
                )
                assert status["lastFailureReason"] == SERVICE_UNREACHABLE
                assert status.get("failedRefreshAttempts", 0) >= 1
                assert condition(obj, "Reconciling") == "True"
                assert status["tokenId"] == token_ids[n]
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            assert time.monotonic() - stopped > ACCESS_TOKEN_TTL
            # The Secrets kept their last values all along (nothing blanked, nothing re-issued).
            assert {n: secret_data(kube, ns, n) or {} for n in names} == last
        returned = time.monotonic()

        def all_fresh(last: dict[str, dict[str, str]] = last) -> dict[str, Any] | None:
            objs = {n: get_api_token(kube, ns, n) for n in names}
            now = datetime.now(UTC)
            for n, obj in objs.items():
                data = secret_data(kube, ns, n) or {}
                if (
                    condition(obj, "Ready") != "True"
                    or expires_at(kube, ns, n) <= now
                    or data.get("access_token") in (None, last[n]["access_token"])
                ):
                    return None
            return objs

        after = eventually("every ApiToken Ready and refreshed", all_fresh, timeout=RECOVERY_S)
        recovered_in = time.monotonic() - returned
        assert recovered_in < RECOVERY_S
        for n, obj in after.items():
            assert status_of(obj)["tokenId"] == token_ids[n], f"{n} was re-issued"
            assert status_of(obj).get("failedRefreshAttempts", 0) == 0
            ids = sorted(t["id"] for t in op.admin.tokens_of(created[n].metadata.uid))
            assert ids == at_service[n], f"{n}: tokens at the service changed: {ids}"
    assert op.service.replays() == 0, "a rotated refresh token was presented again"
