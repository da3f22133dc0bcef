"""Running decisions: the real HTTP clients against a token service faked with MockTransport,
and an in-memory Secret writer. Checks the order of effects and the refresh critical section."""

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from apitoken_operator.core.apitoken.decide import ApiTokenView, Observation, WorkspaceView
from apitoken_operator.core.managed_secret import observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import (
    CredentialObservation,
    CredentialPolicy,
    WorkspaceObject,
)
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    TokenWorkspaceSpec,
    WorkspaceKind,
)
from apitoken_operator.execution.apitoken import Ports, reconcile_once, service_tokens
from apitoken_operator.execution.held_token import TokenLocks, WriteRetry
from apitoken_operator.execution.workspace import (
    CredentialOutcome,
    CredentialPorts,
    reconcile_credential_once,
)
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.oauth2 import TokenEndpointClient

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
UID = "uid-1"
POLICY = TimingPolicy(refresh_jitter_percent=0)
NO_WAIT = WriteRetry(attempts=3, first_delay=timedelta(0))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeService:
    """The token service's contract, just enough of it, in memory."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tokens: dict[str, dict[str, Any]] = {}
        self.refresh_of: dict[str, str] = {}  # current refresh token -> token id
        self.calls: list[str] = []
        self.down = False
        self.counter = 0

    def _pair(self, token_id: str) -> tuple[str, str]:
        self.counter += 1
        refresh = f"rt-value-{self.counter}"
        self.refresh_of = {k: v for k, v in self.refresh_of.items() if v != token_id}
        self.refresh_of[refresh] = token_id
        # JWT-shaped, with the value marker in the signature part so leak checks can see it.
        claims = base64.urlsafe_b64encode(json.dumps({"sub": "operator", "tid": token_id}).encode())
        return f"e30.{claims.decode().rstrip('=')}.at-value-{self.counter}", refresh

    def seed(self, name: str = "operator") -> str:
        """A token made outside the operator (by `apitoken-service init`); its refresh token."""
        token_id = f"tok-{len(self.tokens) + 1}"
        expires = self.clock() + timedelta(days=30)
        self.tokens[token_id] = {
            "id": token_id,
            "name": name,
            "status": "active",
            "expiresAt": expires.isoformat().replace("+00:00", "Z"),
            "externalRef": None,
        }
        return self._pair(token_id)[1]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused")
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        now = self.clock()
        if path == "/oauth2/token":
            form = parse_qs(request.content.decode())
            token_id = self.refresh_of.get(form["refresh_token"][0])
            if token_id is None or self.tokens[token_id]["status"] != "active":
                return httpx.Response(
                    400, json={"error": "invalid_grant", "error_description": "no"}
                )
            access, refresh = self._pair(token_id)
            left = datetime.fromisoformat(self.tokens[token_id]["expiresAt"]) - now
            body = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh,
                "refresh_token_expires_in": int(left.total_seconds()),
            }
            return httpx.Response(200, json=body)
        base = "/api/v1/workspaces/w1/tokens"
        if request.method == "POST" and path == base:
            body = json.loads(request.content)
            token_id = f"tok-{len(self.tokens) + 1}"
            meta = {
                "id": token_id,
                "name": body["name"],
                "status": "active",
                "expiresAt": (now + timedelta(days=body["lifetimeDays"]))
                .isoformat()
                .replace("+00:00", "Z"),
                "externalRef": body.get("externalRef"),
            }
            self.tokens[token_id] = meta
            access, refresh = self._pair(token_id)
            return httpx.Response(
                201,
                json={
                    **meta,
                    "accessToken": access,
                    "accessTokenExpiresAt": (now + timedelta(hours=1))
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "refreshToken": refresh,
                },
            )
        if request.method == "GET" and path == base:
            ref = parse_qs(request.url.query.decode())["externalRef"][0]
            items = [t for t in self.tokens.values() if t["externalRef"] == ref]
            return httpx.Response(200, json={"items": items, "next": None})
        token_id = path.removeprefix(base + "/").removesuffix("/disable")
        if token_id not in self.tokens:
            return httpx.Response(404, json={"detail": "no such token"})
        if request.method == "POST" and path.endswith("/disable"):
            self.tokens[token_id]["status"] = "disabled"
            return httpx.Response(200, json=self.tokens[token_id])
        if request.method == "DELETE":
            del self.tokens[token_id]
            return httpx.Response(204)
        return httpx.Response(405)


class MemorySecrets:
    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.failures = 0

    async def apply(self, manifest: dict[str, Any]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("apiserver unavailable")
        self.written.append(manifest)


@dataclasses.dataclass
class Harness:
    clock: Clock
    service: FakeService
    secrets: MemorySecrets
    ports: Ports
    obs: Observation

    @classmethod
    def new(cls, spec: dict[str, Any] | None = None) -> "Harness":
        clock = Clock()
        service = FakeService(clock)
        http = httpx.AsyncClient(transport=httpx.MockTransport(service.handle))

        async def bearer() -> str:
            return "operator-bearer"

        ports = Ports(
            secrets=MemorySecrets(),
            token_endpoint=TokenEndpointClient(
                http, token_endpoint="http://svc/oauth2/token", clock=clock
            ),
            management=TokenServiceClient(
                http, base_url="http://svc", workspace="w1", bearer=bearer
            ),
        )
        token = ApiTokenView(
            namespace="apps",
            name="billing",
            uid=UID,
            generation=1,
            spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "main"}, **(spec or {})}),
            status=ApiTokenStatus(),
        )
        ws = WorkspaceView(
            kind=WorkspaceKind.TOKEN_WORKSPACE,
            name="main",
            spec=TokenWorkspaceSpec(url="http://svc", workspace="w1"),
        )
        assert isinstance(ports.secrets, MemorySecrets)
        return cls(
            clock,
            service,
            ports.secrets,
            ports,
            Observation(token=token, secret=None, workspace=ws),
        )

    async def run(self, *, list_tokens: bool = True) -> Any:
        """One run as the Kopf layer would do it: list, reconcile, persist status, keep state."""
        obs = self.obs
        if list_tokens:
            assert isinstance(self.ports.management, TokenServiceClient)
            listed = await self.ports.management.list_tokens(external_ref=UID)
            obs = dataclasses.replace(obs, service_tokens=service_tokens(listed))
        outcome = await reconcile_once(
            obs, self.ports, policy=POLICY, clock=self.clock, retry=NO_WAIT
        )
        secret = observe(self.secrets.written[-1]) if self.secrets.written else None
        token = dataclasses.replace(outcome.observation.token, status=outcome.decision.status)
        self.obs = dataclasses.replace(obs, token=token, secret=secret, service_tokens=None)
        return outcome


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
    assert second.decision.status.last_refresh_time == h.clock.now

    h.clock.now += timedelta(minutes=1)
    writes = len(h.secrets.written)
    third = await h.run()
    assert not third.status_changed and len(h.secrets.written) == writes


async def test_failed_secret_write_after_refresh_is_retried_from_memory() -> None:
    h = Harness.new()
    await h.run()
    h.clock.now = T0 + timedelta(minutes=45)
    h.secrets.failures = 2
    before = h.service.calls.count("POST /oauth2/token")
    await h.run()
    assert h.service.calls.count("POST /oauth2/token") == before + 1  # refreshed once
    assert h.obs.secret is not None and h.obs.secret.data["refresh_token"] == "rt-value-2"


async def test_secret_write_failing_for_good_raises_without_refreshing_again() -> None:
    h = Harness.new()
    await h.run()
    h.clock.now = T0 + timedelta(minutes=45)
    h.secrets.failures = 10
    before = h.service.calls.count("POST /oauth2/token")
    with pytest.raises(ConnectionError):
        await h.run()
    assert h.service.calls.count("POST /oauth2/token") == before + 1


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


class MemoryValue:
    def __init__(self, value: str | None) -> None:
        self.value = value

    async def read(self) -> str | None:
        return self.value


@dataclasses.dataclass
class CredentialHarness:
    clock: Clock
    service: FakeService
    secrets: MemorySecrets
    bootstrap: MemoryValue
    ports: CredentialPorts
    obs: CredentialObservation

    @classmethod
    def new(cls) -> "CredentialHarness":
        clock = Clock()
        service = FakeService(clock)
        http = httpx.AsyncClient(transport=httpx.MockTransport(service.handle))
        secrets = MemorySecrets()
        bootstrap = MemoryValue(service.seed())

        def management_with(bearer: str) -> TokenServiceClient:
            async def source() -> str:
                return bearer

            return TokenServiceClient(http, base_url="http://svc", workspace="w1", bearer=source)

        ports = CredentialPorts(
            secrets=secrets,
            token_endpoint=TokenEndpointClient(
                http, token_endpoint="http://svc/oauth2/token", clock=clock
            ),
            bootstrap=bootstrap,
            management_with=management_with,
        )
        ws = WorkspaceObject(
            kind=WorkspaceKind.TOKEN_WORKSPACE,
            name="main",
            namespace="apps",
            uid="ws-uid",
            generation=1,
            spec=TokenWorkspaceSpec.model_validate(
                {"url": "http://svc", "workspace": "w1", "credentialsSecretRef": {"name": "boot"}}
            ),
        )
        obs = CredentialObservation(workspace=ws, secret=None, bootstrap_digest=None)
        return cls(clock, service, secrets, bootstrap, ports, obs)

    async def run(self) -> CredentialOutcome:
        value = self.bootstrap.value
        digest = salted_digest("ws-uid", value) if value is not None else None
        obs = dataclasses.replace(self.obs, bootstrap_digest=digest)
        outcome = await reconcile_credential_once(
            obs, self.ports, policy=CREDENTIAL_POLICY, clock=self.clock, retry=NO_WAIT
        )
        secret = observe(self.secrets.written[-1]) if self.secrets.written else None
        ws = dataclasses.replace(obs.workspace, status=outcome.decision.status)
        self.obs = dataclasses.replace(obs, workspace=ws, secret=secret)
        return outcome


CREDENTIAL_POLICY = CredentialPolicy(lifetime_days=30, timing=POLICY)


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
