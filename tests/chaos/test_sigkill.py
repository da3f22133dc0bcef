"""Issue 11 item 7: the operator SIGKILLed at random moments while ApiTokens are created, edited,
disabled, re-issued and deleted, with the token service answering slowly now and then.

Afterwards: every active token at the service belongs to a live ApiToken, no rotated refresh
token was presented again (the service's replay counter stays zero), every live ApiToken is
Ready within 60 s of the last restart and its Secret refreshes.

`make test` runs the short version (CHAOS_KILLS=5, CHAOS_TOKENS=30, 6 s access tokens);
`make chaos` the full one (50 kills, 200 ApiTokens, CHAOS_ACCESS_TOKEN_TTL=30). CHAOS_SEED picks
the sequence of operations and kill moments, so a failure can be replayed.

The full run's access tokens live 30 s, not 6 s: 200 ApiTokens at 6 s are 33 refreshes a second,
the steady-state benchmark's rate for 10,000 tokens, on a 2-core machine shared with the
apiserver, etcd, the service and this process; the test would then measure throughput (Secrets
going stale because the machine cannot keep up) rather than crash safety. At 30 s (about 7
refreshes a second) every token still refreshes several times during the kills, so kills land
in the middle of rotations.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.types import PatchType

from apitoken_operator.kube.resources import ApiToken, TokenWorkspace
from support import chaos
from support.faults import FaultProxy
from support.operator import (
    ACCESS_TOKEN_TTL,
    RunningOperator,
    ServiceAdmin,
    api_token,
    condition,
    create_workspace,
    eventually,
    leaks,
    release_leftovers,
    secret_data,
)

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

log = logging.getLogger(__name__)
TTL = chaos.TTL or ACCESS_TOKEN_TTL
KILLS, TOKENS, SEED = chaos.KILLS, chaos.TOKENS, chaos.SEED


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    return TTL


@pytest.fixture(scope="module")
def rotation_grace() -> int:
    # The service's default (docs/usage.md): the bound within which a restarted operator must
    # present a refresh token whose answer the kill lost. Each kill costs a Lease takeover (8 s
    # here) and the leader gets 0.05-3 s of work before the next one; the full run's first try
    # at the e2e grace (30 s) saw 3 such retries arrive after it (replays, tokens disabled).
    return 60


def all_service_tokens(admin: ServiceAdmin) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"owner": "*", "limit": "1000", **({"cursor": cursor} if cursor else {})}
        response = admin.http.get(
            f"/api/v1/workspaces/{admin.service.workspace}/tokens",
            params=params,
            headers=admin._bearer(),
        )
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        cursor = body.get("next")
        if not cursor:
            return items


def not_ready(kube: Client, namespace: str, names: list[str]) -> str:
    lines = []
    for n in names:
        obj = kube.get(ApiToken, n, namespace=namespace)
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready = [c for c in conditions if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            lines.append(f"{n}: {ready[0] if ready else 'no Ready condition'}")
    return "not Ready after 60 s:\n" + "\n".join(lines)


class Churn:
    """Random operations on the namespace's ApiTokens, from one seeded generator."""

    def __init__(self, kube: Client, namespace: str, rng: random.Random) -> None:
        self.kube, self.namespace, self.rng = kube, namespace, rng
        self.created = 0
        self.live: dict[str, bool] = {}  # name -> disabled

    def step(self) -> None:
        enabled = [n for n, disabled in self.live.items() if not disabled]
        roll = self.rng.random()
        if self.created < TOKENS and (roll < 0.5 or not enabled):
            name = f"c{self.created:03d}"
            self.created += 1
            api_token(self.kube, self.namespace, name, lifetimeDays=self.rng.randint(1, 365))
            self.live[name] = False
            return
        if not enabled:
            return
        name = self.rng.choice(enabled)
        if roll < 0.65:
            self._patch(name, {"spec": {"lifetimeDays": self.rng.randint(1, 365)}})
        elif roll < 0.75:
            self._patch(name, {"spec": {"disabled": True}})
            self.live[name] = True
        elif roll < 0.88:
            reissue = {"apitoken.dev/reissue": str(self.rng.random())}
            self._patch(name, {"metadata": {"annotations": reissue}})
        else:
            self.kube.delete(ApiToken, name, namespace=self.namespace)
            del self.live[name]

    def _patch(self, name: str, body: dict[str, Any]) -> None:
        self.kube.patch(ApiToken, name, body, namespace=self.namespace, patch_type=PatchType.MERGE)


def test_sigkill_at_random_moments_loses_nothing(
    kube: Client,
    namespace: str,
    running_operator: RunningOperator,
    service_admin: ServiceAdmin,
) -> None:
    rng = random.Random(SEED)
    running_operator.wait_ready()
    service = service_admin.service
    with FaultProxy(service.base_url) as proxy:
        proxy.slow_fraction, proxy.slow_seconds = 0.1, 0.5
        create_workspace(
            kube,
            namespace,
            url=proxy.url,
            service_workspace=service.workspace,
            bootstrap_value=service_admin.new_bootstrap_value(f"operator-{namespace}"),
        )
        churn = Churn(kube, namespace, rng)
        steps_per_kill = max(1, (TOKENS * 2) // KILLS)
        for _ in range(KILLS):
            for _ in range(steps_per_kill):
                churn.step()
            # The kill lands while the operator works through what was just applied.
            time.sleep(rng.uniform(0.05, 3.0))
            running_operator.restart(crash=True)
        last_restart = time.monotonic()
        while churn.created < TOKENS:
            churn.step()

        live_enabled = sorted(n for n, disabled in churn.live.items() if not disabled)

        def all_ready() -> bool:
            # One list per probe, not a get per ApiToken: the fault proxy shares this process.
            ready = {
                str(o.metadata.name)
                for o in kube.list(ApiToken, namespace=namespace)
                if o.metadata is not None and condition(o, "Ready") == "True"
            }
            return ready.issuperset(live_enabled)

        try:
            eventually(
                "every live ApiToken Ready after the last restart",
                all_ready,
                timeout=60,
                interval=1,
            )
        except AssertionError:
            raise AssertionError(not_ready(kube, namespace, live_enabled)) from None
        # The figure docs/benchmarks.md records; at WARNING so that make chaos shows it
        # (--log-cli-level=WARNING) without every HTTP request logged at INFO.
        log.warning(
            "chaos sigkill: %d kills, %d ApiTokens created, %d live and enabled, all Ready "
            "%.1f s after the last restart",
            KILLS,
            churn.created,
            len(live_enabled),
            time.monotonic() - last_restart,
        )

        # Every live Secret refreshes (within one access-token life after the first wait).
        before = {
            n: (secret_data(kube, namespace, n) or {}).get("access_token") for n in live_enabled
        }

        def all_refreshed() -> bool:
            return all(
                (secret_data(kube, namespace, n) or {}).get("access_token") not in (None, before[n])
                for n in live_enabled
            )

        eventually("every live Secret to refresh", all_refreshed, timeout=TTL + 60, interval=1)

        assert service.replays() == 0, "a rotated refresh token was presented again"

        uids = {
            str(obj.metadata.uid): str(obj.metadata.name)
            for obj in kube.list(ApiToken, namespace=namespace)
            if obj.metadata is not None
        }
        # The operator's own workspace credential may be tagged with the workspace's UID.
        workspaces = {
            str(o.metadata.uid)
            for o in kube.list(TokenWorkspace, namespace=namespace)
            if o.metadata
        }

        def settled() -> list[str]:
            wrong = []
            active: dict[str, int] = {}
            for t in all_service_tokens(service_admin):
                ref = t.get("externalRef")
                if not ref or t.get("status") != "active":
                    continue
                if ref in workspaces:
                    continue
                if ref not in uids:
                    wrong.append(f"active token {t['id']} of no live ApiToken ({ref})")
                    continue
                active[uids[ref]] = active.get(uids[ref], 0) + 1
            for name in live_enabled:
                if active.get(name, 0) != 1:
                    wrong.append(f"{name}: {active.get(name, 0)} active tokens, expected 1")
            for name, disabled in churn.live.items():
                if disabled and active.get(name, 0):
                    wrong.append(f"{name} is disabled but has an active token")
            return wrong

        # Tokens of deleted ApiTokens and replaced ones are swept by the runs after a restart.
        found: list[str] = []

        def nothing_stray() -> bool:
            found[:] = settled()
            return not found

        try:
            eventually("no stray or missing token at the service", nothing_stray, timeout=60)
        except AssertionError:
            raise AssertionError(f"{found}") from None
        leaked = leaks(kube, namespace, running_operator, service)
        assert not leaked, leaked
    try:
        release_leftovers(kube, namespace)
    except ApiError:
        pass
