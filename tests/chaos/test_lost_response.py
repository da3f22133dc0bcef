"""Issue 11 item 8: a lost response. The fault proxy forwards a refresh to the token service,
which commits the rotation, and withholds the answer (the operator's call times out). The
operator's retry presents the same refresh token within the service's rotation grace and gets
the committed successor: the Secret ends up with exactly the refresh token of the lost answer,
the token is not re-issued, the chain goes on refreshing, and the service counts no replay.

tests/e2e/test_operator_faults.py covers answers that never left the service (503, a hang before
forwarding); this is the one where the service acted and the answer was lost. `make chaos`
loses CHAOS_ROUNDS answers in a row on the same chain (one in `make test`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from lightkube import Client

from support import chaos
from support.faults import FaultProxy, Mode, digest
from support.operator import (
    OperatorTest,
    api_token,
    create_workspace,
    eventually,
    next_refresh,
    ready_token,
    secret_data,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

ACCESS_TOKEN_TTL = 12
# The proxy holds the lost answer this long, well past the operator's HTTP timeout.
HOLD_S = 4.0


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    return ACCESS_TOKEN_TTL


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return {"APITOKEN_OPERATOR_HTTP_TIMEOUT": "1s"}


@pytest.fixture(scope="module")
def proxy(e2e_service: RunningTokenService) -> Iterator[FaultProxy]:
    with FaultProxy(e2e_service.base_url, hang_limit=HOLD_S) as running:
        yield running


def refresh_token_of(kube: Client, namespace: str) -> str:
    return (secret_data(kube, namespace, "tok") or {}).get("refresh_token", "")


def successor_of(kube: Client, namespace: str, old: str) -> str | None:
    current = refresh_token_of(kube, namespace)
    return current if current not in ("", old) else None


def test_a_lost_refresh_answer_is_recovered_through_the_grace_retry(
    kube: Client, op: OperatorTest, proxy: FaultProxy
) -> None:
    ns = op.namespace
    create_workspace(
        kube,
        ns,
        url=proxy.url,
        service_workspace=op.service.workspace,
        bootstrap_value=op.admin.new_bootstrap_value(f"operator-proxied-{ns}"),
        name="proxied",
        bootstrap_secret="bootstrap-proxied",
    )
    created = api_token(kube, ns, workspace="proxied")
    token_id = status_of(ready_token(kube, ns)).get("tokenId")
    # Right after a refresh, so the next one (at about half the life) is the one dropped.
    first = refresh_token_of(kube, ns)
    eventually("a refresh", lambda: refresh_token_of(kube, ns) not in ("", first), timeout=20)
    dropped: list[str] = []
    for _ in range(chaos.ROUNDS):
        old = refresh_token_of(kube, ns)
        proxy.target(old)
        proxy.mode = Mode.DROP

        new = eventually(
            "the refresh after the lost answer",
            functools.partial(successor_of, kube, ns, old),
            timeout=ACCESS_TOKEN_TTL + 15,
        )
        statuses = [p.status for p in proxy.presented(old)]
        # The dropped one: still held (0) or answered 504 once the hold passed.
        assert len(statuses) >= 2 and statuses[0] in (0, 504) and statuses[-1] == 200, statuses
        # The service rotated once: the retry got the successor of the lost answer, nothing else.
        dropped.append(digest(new))
        assert proxy.dropped_refresh_tokens == dropped
        obj = ready_token(kube, ns)
        assert status_of(obj).get("tokenId") == token_id, "re-issued instead of retried"
        assert [t["id"] for t in op.admin.tokens_of(created.metadata.uid)] == [token_id]
        # The chain goes on from the recovered refresh token.
        after = next_refresh(
            kube, ns, secret_data(kube, ns, "tok") or {}, timeout=ACCESS_TOKEN_TTL + 5
        )
        assert after["refresh_token"] != new
        assert op.service.replays() == 0, "a rotated refresh token was presented again"
