"""Fakes for unit tests of the held-token executor: a token service faked with MockTransport
behind the real HTTP clients, an in-memory Secret writer, and one harness per policy (ApiToken,
workspace credential) that runs a reconcile and feeds its result back as the next observation."""

import base64
import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx

from apitoken_operator.core.apitoken.decide import ApiTokenView, Observation, WorkspaceView
from apitoken_operator.core.managed_secret import observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import (
    CredentialObservation,
    CredentialPolicy,
    WorkspaceObject,
)
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    TokenWorkspaceSpec,
    TokenWorkspaceStatus,
    WorkspaceKind,
)
from apitoken_operator.execution.apitoken import Ports, reconcile_once, service_tokens
from apitoken_operator.execution.held_token import Backlog, WriteRetry
from apitoken_operator.execution.workspace import (
    CredentialOutcome,
    CredentialPorts,
    reconcile_credential_once,
)
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.oauth2 import TokenEndpointClient
from support.clock import Clock

UID = "uid-1"
POLICY = TimingPolicy(refresh_jitter_percent=0)
NO_WAIT = WriteRetry(attempts=3, first_delay=timedelta(0))
WS_UID = "ws-uid"
# A workspace whose provider manages tokens (the token service) and has no bootstrap Secret.
WORKSPACE_SPEC = TokenWorkspaceSpec(url="http://svc", workspace="w1")


def api_token_view(spec: dict[str, Any] | None = None) -> ApiTokenView:
    """The ApiToken apps/billing (UID `UID`) using TokenWorkspace "main", with no status yet."""
    return ApiTokenView(
        namespace="apps",
        name="billing",
        uid=UID,
        generation=1,
        spec=ApiTokenSpec.model_validate({"workspaceRef": {"name": "main"}, **(spec or {})}),
        status=ApiTokenStatus(),
    )


def workspace_object(
    spec: TokenWorkspaceSpec = WORKSPACE_SPEC, status: TokenWorkspaceStatus | None = None
) -> WorkspaceObject:
    """The TokenWorkspace apps/main (UID `WS_UID`) as the workspace policy sees it."""
    return WorkspaceObject(
        kind=WorkspaceKind.TOKEN_WORKSPACE,
        name="main",
        namespace="apps",
        uid=WS_UID,
        generation=1,
        spec=spec,
        status=status or TokenWorkspaceStatus(),
    )


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
        ws = WorkspaceView(kind=WorkspaceKind.TOKEN_WORKSPACE, name="main", spec=WORKSPACE_SPEC)
        assert isinstance(ports.secrets, MemorySecrets)
        return cls(
            clock,
            service,
            ports.secrets,
            ports,
            Observation(token=api_token_view(spec), secret=None, workspace=ws),
        )

    async def run(self, *, list_tokens: bool = True, backlog: Backlog | None = None) -> Any:
        """One run as the Kopf layer would do it: list, reconcile (with the token's `backlog`,
        if given), persist status, keep state."""
        obs = self.obs
        if list_tokens:
            assert isinstance(self.ports.management, TokenServiceClient)
            listed = await self.ports.management.list_tokens(external_ref=UID)
            obs = dataclasses.replace(obs, service_tokens=service_tokens(listed))
        outcome = await reconcile_once(
            obs, self.ports, policy=POLICY, clock=self.clock, retry=NO_WAIT, backlog=backlog
        )
        secret = observe(self.secrets.written[-1]) if self.secrets.written else None
        token = dataclasses.replace(outcome.observation.token, status=outcome.decision.status)
        self.obs = dataclasses.replace(obs, token=token, secret=secret, service_tokens=None)
        return outcome


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
        spec = TokenWorkspaceSpec.model_validate(
            {"url": "http://svc", "workspace": "w1", "credentialsSecretRef": {"name": "boot"}}
        )
        obs = CredentialObservation(
            workspace=workspace_object(spec), secret=None, bootstrap_digest=None
        )
        return cls(clock, service, secrets, bootstrap, ports, obs)

    async def run(self, *, backlog: Backlog | None = None) -> CredentialOutcome:
        """One run as the Kopf layer would do it (with the workspace's `backlog`, if given):
        read the bootstrap value's digest, reconcile, persist status, keep state."""
        value = self.bootstrap.value
        digest = salted_digest(WS_UID, value) if value is not None else None
        obs = dataclasses.replace(self.obs, bootstrap_digest=digest)
        outcome = await reconcile_credential_once(
            obs,
            self.ports,
            policy=CREDENTIAL_POLICY,
            clock=self.clock,
            retry=NO_WAIT,
            backlog=backlog,
        )
        secret = observe(self.secrets.written[-1]) if self.secrets.written else None
        ws = dataclasses.replace(obs.workspace, status=outcome.decision.status)
        self.obs = dataclasses.replace(obs, workspace=ws, secret=secret)
        return outcome


CREDENTIAL_POLICY = CredentialPolicy(lifetime_days=30, timing=POLICY)


async def refresh_not_written(h: Harness | CredentialHarness, at: datetime) -> Backlog:
    """A first run, then at `at` a refresh whose Secret writes all fail: the run raises and the
    backlog it returns keeps the values for the next run."""
    backlog = Backlog()
    await h.run(backlog=backlog)
    h.clock.now = at
    h.secrets.failures = 100
    try:
        await h.run(backlog=backlog)
    except ConnectionError:
        return backlog
    raise AssertionError("the run wrote the Secret although every write failed")
