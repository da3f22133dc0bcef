"""Faults the token service and the apiserver really produce, end to end.

A fault-injecting HTTP proxy (tests/support/faults.py) sits between the operator and the token
service: it answers the ApiToken's refreshes with 503, or lets them hang past the operator's
HTTP timeout, and records when each was presented. Retries come at the operator's capped
exponential backoff; Ready stays True while the Secret's access token is valid and turns False
once it expired; all recovers when traffic passes again.

A ValidatingAdmissionPolicy makes the real apiserver refuse updates of the managed Secret while
a refresh happens: the rotated values are written from memory once writes are allowed again, and
the service sees exactly one refresh with the old refresh token, also after the operator's
in-memory write retries ran out. The same for a workspace's own credential Secret, while an
ApiToken of the workspace keeps refreshing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import Client

from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.schedule import stable_fraction
from apitoken_operator.kube.resources import TokenWorkspace
from support.faults import FaultProxy, Mode, Presented, secret_writes_denied
from support.operator import (
    OperatorTest,
    RunningOperator,
    ServiceAdmin,
    Workspace,
    access_token_schedule,
    api_token,
    condition,
    create_workspace,
    eventually,
    get_api_token,
    ready_token,
    reason,
    secret_data,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.e2e

# Access tokens live 12 s and are refreshed at about half their life: a fault that starts right
# after a refresh leaves about 6 s of retries before the access token expires.
ACCESS_TOKEN_TTL = 12
BACKOFF_BASE = timedelta(seconds=1)
BACKOFF_CAP = timedelta(seconds=4)
HTTP_TIMEOUT = timedelta(seconds=1)
# In-memory Secret write retries: 4 attempts 1 s, 2 s and 4 s apart (7 s in all).
WRITE_ATTEMPTS = 4
WRITE_FIRST_DELAY = timedelta(seconds=1)
WRITE_BUDGET = WRITE_FIRST_DELAY * (2 ** (WRITE_ATTEMPTS - 1) - 1)


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    return ACCESS_TOKEN_TTL


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return {
        "APITOKEN_OPERATOR_BACKOFF_BASE": "1s",
        "APITOKEN_OPERATOR_BACKOFF_CAP": "4s",
        "APITOKEN_OPERATOR_HTTP_TIMEOUT": "1s",
        "APITOKEN_OPERATOR_SECRET_WRITE_ATTEMPTS": str(WRITE_ATTEMPTS),
        "APITOKEN_OPERATOR_SECRET_WRITE_FIRST_DELAY": "1s",
    }


@pytest.fixture(scope="module")
def proxy(e2e_service: RunningTokenService) -> Iterator[FaultProxy]:
    with FaultProxy(e2e_service.base_url) as running:
        yield running


@pytest.fixture
def proxied(
    kube: Client, workspace: Workspace, service_admin: ServiceAdmin, proxy: FaultProxy
) -> Iterator[str]:
    """A Ready TokenWorkspace "proxied" reaching the token service through the proxy; the
    namespace. The proxy passes everything again afterwards."""
    ns = workspace.namespace
    create_workspace(
        kube,
        ns,
        url=proxy.url,
        service_workspace=service_admin.service.workspace,
        bootstrap_value=service_admin.new_bootstrap_value(f"operator-proxied-{ns}"),
        name="proxied",
        bootstrap_secret="bootstrap-proxied",
    )
    try:
        yield ns
    finally:
        proxy.mode = Mode.PASS


def refresh_token(kube: Client, namespace: str) -> str:
    data = secret_data(kube, namespace, "tok")
    assert data is not None and "refresh_token" in data
    return data["refresh_token"]


def just_refreshed(kube: Client, namespace: str) -> str:
    """Wait for the operator's next refresh; the new refresh token. The next one is then about
    half an access token's life away, so a fault set up now catches it."""
    before = refresh_token(kube, namespace)

    def changed() -> str | None:
        now = refresh_token(kube, namespace)
        return now if now != before else None

    return eventually("a refresh", changed, timeout=ACCESS_TOKEN_TTL + 5)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_backoff(presented: list[Presented], uid: str, *, call_time: timedelta) -> None:
    """Consecutive failed presentations are the backoff apart (plus the failed call's own
    time): the delay doubles from the base up to the cap, with the operator's stable jitter.
    (The last failure is left out: traffic passed again while it was under way.)"""
    failed = [p for p in presented if p.status != 200]
    assert len(failed) >= 5, presented
    expected: list[float] = []
    seen: list[float] = []
    for attempt, (this, following) in enumerate(itertools.pairwise(failed), 1):
        delay = backoff_delay(
            attempt,
            base=BACKOFF_BASE,
            cap=BACKOFF_CAP,
            jitter=stable_fraction(uid, str(attempt)),
        )
        expected.append(round((call_time + delay).total_seconds(), 2))
        seen.append(round(following.at - this.at, 2))
    # Never earlier than planned; late by at most a second (the failure time is recorded in
    # whole seconds, rounded up) and the run's own work.
    for want, got in zip(expected, seen, strict=True):
        assert want - 0.1 <= got <= want + 2.0, (expected, seen)
    # Growing, then capped.
    assert expected[2] > expected[0]
    assert max(expected) <= (call_time + BACKOFF_CAP).total_seconds()


def ride_out_a_fault(
    kube: Client, proxy: FaultProxy, namespace: str, mode: Mode
) -> tuple[Any, list[Presented]]:
    """Fault the ApiToken's refreshes until the access token expired and five retries failed;
    check the conditions on the way; pass traffic again. The ApiToken as it was after expiry,
    and the refreshes presenting the refresh token the fault caught."""
    r0 = just_refreshed(kube, namespace)
    proxy.target(r0)
    proxy.mode = mode

    def failed() -> tuple[Any, datetime] | None:
        obj = get_api_token(kube, namespace)
        seen_at = datetime.now(UTC)
        return (obj, seen_at) if status_of(obj).get("failedRefreshAttempts", 0) >= 1 else None

    obj, seen_at = eventually("a failed refresh", failed, timeout=ACCESS_TOKEN_TTL + 5)
    status = status_of(obj)
    expires = when(access_token_schedule(kube, namespace)["expiresAt"])
    assert seen_at < expires, "the failure was seen only after expiry: widen the window"
    # Ready holds while the access token in the Secret is valid; Reconciling says why.
    assert condition(obj, "Ready") == "True"
    assert condition(obj, "Reconciling") == "True"
    assert reason(obj, "Reconciling") in (status["lastFailureReason"], "Refreshing")

    def expired() -> Any:
        obj = get_api_token(kube, namespace)
        return obj if condition(obj, "Ready") == "False" else None

    obj = eventually("Ready=False after expiry", expired, timeout=ACCESS_TOKEN_TTL + 5)
    assert datetime.now(UTC) >= expires
    eventually("five failed retries", lambda: len(proxy.presented(r0)) >= 6, timeout=40)
    # Still refused: the Secret was not touched meanwhile.
    assert refresh_token(kube, namespace) == r0
    proxy.mode = Mode.PASS
    recovered = ready_token(kube, namespace, timeout=20)
    assert status_of(recovered).get("failedRefreshAttempts", 0) == 0
    assert "lastFailureReason" not in status_of(recovered)
    assert refresh_token(kube, namespace) != r0
    assert [p.status for p in proxy.presented(r0)].count(200) == 1
    return obj, proxy.presented(r0)


@pytest.mark.parametrize(
    ("mode", "failure", "message", "call_time"),
    [
        (Mode.FAIL, "ServiceError", "503", timedelta(0)),
        (Mode.HANG, "ServiceUnreachable", "timed out", HTTP_TIMEOUT),
    ],
    ids=["5xx", "timeouts"],
)
def test_failed_refreshes_are_retried_with_capped_exponential_backoff(
    kube: Client,
    op: OperatorTest,
    proxied: str,
    proxy: FaultProxy,
    mode: Mode,
    failure: str,
    message: str,
    call_time: timedelta,
) -> None:
    """Answered with 503, or not answered within the HTTP timeout (whose wait is part of each
    attempt): the refresh is retried with capped exponential backoff, the token stays valid at
    the service."""
    ns = proxied
    created = api_token(kube, ns, workspace="proxied", refreshPercent=50)
    ready_token(kube, ns)
    expired, presented = ride_out_a_fault(kube, proxy, ns, mode)
    status = status_of(expired)
    assert reason(expired) == failure
    assert status["lastFailureReason"] == failure
    assert message in status["lastFailureMessage"]
    assert_backoff(presented, created.metadata.uid, call_time=call_time)
    token = op.admin.token(status["tokenId"])
    assert token is not None and token["status"] == "active"


# ---------------------------------------------------------------------------------------------
# Secret writes refused by the apiserver.


def refused_writes(operator: RunningOperator, namespace: str) -> int:
    """Writes of Secret tok the apiserver refused, from the operator's request log."""
    path = f"/namespaces/{namespace}/secrets/tok?"
    return sum(
        1
        for line in operator.logs().splitlines()
        if "HTTP Request: PATCH" in line and path in line and "422 Unprocessable" in line
    )


def kept_values_written(proxy: FaultProxy, read: Callable[[], str], old: str, what: str) -> None:
    """Once writes are allowed: the Secret (`read` gives its refresh token) gets the rotated
    refresh token, the old one `old` reached the service exactly once (the values were kept,
    not obtained again), and the rotated one works (the operator's next refresh succeeds)."""

    def rotated() -> str | None:
        value = read()
        return value if value != old else None

    written = eventually(f"the rotated {what} in the Secret", rotated, timeout=20)
    assert [p.status for p in proxy.presented(old)] == [200]
    eventually(
        f"a refresh with the rotated {what}",
        lambda: [p for p in proxy.presented(written) if p.status == 200],
        timeout=ACCESS_TOKEN_TTL + 10,
    )


@pytest.mark.parametrize("denied_for", ["a retry", "longer than the retries"])
def test_a_refused_secret_write_is_retried_from_memory_without_refreshing_again(
    kube: Client, op: OperatorTest, proxied: str, proxy: FaultProxy, denied_for: str
) -> None:
    ns = proxied
    api_token(kube, ns, workspace="proxied", refreshPercent=50)
    token_id = status_of(ready_token(kube, ns))["tokenId"]
    r0 = just_refreshed(kube, ns)
    proxy.target(r0)
    with secret_writes_denied(kube, ns, "tok"):
        refreshed = eventually(
            "the refresh", lambda: [p for p in proxy.presented(r0) if p.status], timeout=20
        )
        assert refreshed[0].status == 200
        if denied_for == "a retry":
            time.sleep(1.5)  # a write or two refused, well within the in-memory retries
        else:
            # Past the in-memory retries: the failure shows in status, and once the access
            # token the Secret still holds expired, Ready turns False. Later runs must write
            # the kept values, not refresh again.
            def reported() -> Any:
                obj = get_api_token(kube, ns)
                status = status_of(obj)
                failed = status.get("lastFailureReason") == "SecretWriteFailed"
                return obj if failed and condition(obj, "Ready") == "False" else None

            obj = eventually(
                "the write failure in status", reported, timeout=WRITE_BUDGET.total_seconds() + 15
            )
            assert reason(obj) == "SecretWriteFailed"
            assert "kept in memory" in status_of(obj)["lastFailureMessage"]
            assert condition(obj, "Reconciling") == "True"
        assert refresh_token(kube, ns) == r0, "a write got through the admission policy"
    assert refused_writes(op.operator, ns) >= 1
    exhausted = f"ApiToken {ns}/tok: run failed (ApiError: 422 Invalid)" in op.operator.logs()
    assert exhausted == (denied_for != "a retry")

    kept_values_written(proxy, lambda: refresh_token(kube, ns), r0, "refresh token")
    obj = ready_token(kube, ns)
    assert status_of(obj)["tokenId"] == token_id  # not re-issued
    assert "lastFailureReason" not in status_of(obj)
    token = op.admin.token(token_id)
    assert token is not None and token["status"] == "active"  # no replay was taken for theft


def credential_refresh_token(kube: Client, namespace: str) -> str:
    data = secret_data(kube, namespace, CREDENTIAL)
    assert data is not None and "refresh_token" in data
    return data["refresh_token"]


CREDENTIAL = "proxied-apitoken-credential"


def test_a_refused_credential_write_is_kept_and_api_tokens_go_on_meanwhile(
    kube: Client, op: OperatorTest, proxied: str, proxy: FaultProxy
) -> None:
    """The workspace's own credential Secret refused past the in-memory retries: the refreshed
    credential is kept and written once writes are allowed, with exactly one refresh of the old
    refresh token at the service; the failure shows in the workspace's status; an ApiToken of
    the workspace keeps refreshing meanwhile (the workspace lock is not held through the
    retries, and its runs go on without the management API)."""
    ns = proxied
    api_token(kube, ns, workspace="proxied", refreshPercent=50)
    ready_token(kube, ns)
    credential_id = status_of(kube.get(TokenWorkspace, "proxied", namespace=ns))[
        "credentialTokenId"
    ]
    before = credential_refresh_token(kube, ns)

    def credential_refreshed() -> str | None:
        now = credential_refresh_token(kube, ns)
        return now if now != before else None

    # Right after a credential refresh, so the next one comes while writes are refused.
    c0 = eventually("a credential refresh", credential_refreshed, timeout=ACCESS_TOKEN_TTL + 5)
    with secret_writes_denied(kube, ns, CREDENTIAL):
        refreshed = eventually(
            "the credential's refresh",
            lambda: [p for p in proxy.presented(c0) if p.status],
            timeout=ACCESS_TOKEN_TTL + 5,
        )
        assert refreshed[0].status == 200

        def reported() -> Any:
            obj = kube.get(TokenWorkspace, "proxied", namespace=ns)
            failed = status_of(obj).get("lastFailureReason") == "SecretWriteFailed"
            return obj if failed else None

        obj = eventually(
            "the write failure in the workspace's status",
            reported,
            timeout=WRITE_BUDGET.total_seconds() + 15,
        )
        assert "kept in memory" in status_of(obj)["lastFailureMessage"]
        assert "refused by the test" not in str(status_of(obj))  # no error text in status
        # The ApiToken is not held up: it refreshes while the credential cannot be written.
        r0 = refresh_token(kube, ns)
        eventually(
            "an ApiToken refresh meanwhile",
            lambda: refresh_token(kube, ns) != r0,
            timeout=ACCESS_TOKEN_TTL + 5,
        )
        assert credential_refresh_token(kube, ns) == c0, "a write got through the policy"

    kept_values_written(proxy, lambda: credential_refresh_token(kube, ns), c0, "credential")
    ws = eventually(
        "the workspace Ready",
        lambda: (
            o
            if condition(o := kube.get(TokenWorkspace, "proxied", namespace=ns), "Ready") == "True"
            and "lastFailureReason" not in status_of(o)
            else None
        ),
    )
    assert status_of(ws)["credentialTokenId"] == credential_id
    token = op.admin.token(credential_id)
    assert token is not None and token["status"] == "active"  # no replay taken for theft
