"""A token endpoint nobody here wrote: Authlib's AuthorizationServer with its RefreshTokenGrant
and RFC 7009 RevocationEndpoint, plus RFC 8414 metadata, on a loopback port (uvicorn in a thread
of the test process), for end-to-end tests of refresh-only mode.

    with ForeignIdP(clients=[PUBLIC], access_token_ttl=20, rotate=True) as idp:
        value = idp.issue("seed-ui")            # a refresh token, as a provider's UI shows it
        idp.token_endpoint, idp.revocation_endpoint, idp.issuer
        idp.requests                            # what each request presented (digests only)
        idp.revoked(value)                      # revoked at /revoke (or by rotation)?
        idp.lose_next_answer = True             # act on the next refresh, answer too late

Like the seed's provider (`../shared/seed/oauth2-api-tokens-page.txt`) a public client rotates
its refresh token on every refresh and the old one stops working at once; a confidential client
authenticates with client_secret_basic or client_secret_post and is held to its scope.
Token values live only in memory here; the request log keeps SHA-256 digests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import uvicorn
from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonRequest
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from support.tokenservice import free_loopback_port

__all__ = [
    "CONFIDENTIAL",
    "CONFIDENTIAL_POST",
    "PUBLIC",
    "ForeignIdP",
    "IdPClient",
    "Seen",
    "digest",
]

# Authlib refuses http:// unless told; everything here is on loopback.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class IdPClient(ClientMixin):  # type: ignore[misc]
    client_id: str
    # None: a public client (token_endpoint_auth_method none).
    client_secret: str | None = field(default=None, repr=False)
    auth_method: str = "none"
    scope: str = ""

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return self.scope
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "refresh_token"


_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
PUBLIC = IdPClient("seed-public-client")
CONFIDENTIAL = IdPClient(
    "reports-service",
    client_secret="s3cr3t-client-" + "x" * 24,
    auth_method="client_secret_basic",
    scope="reports:read offline_access",
)
CONFIDENTIAL_POST = dataclasses.replace(
    CONFIDENTIAL, client_id="reports-service-post", auth_method="client_secret_post"
)


@dataclass
class _Token(TokenMixin):  # type: ignore[misc]
    client_id: str
    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    scope: str
    issued_at: float
    expires_in: int
    revoked: bool = False

    def check_client(self, client: IdPClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return False  # refresh tokens here end only by revocation or rotation

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass(frozen=True)
class Seen:
    """One request as the IdP saw it: never a value, only digests."""

    path: str
    client_id: str | None
    auth_method: str | None  # how the client authenticated (Authlib's answer), None: refused
    refresh_token_digest: str | None
    scope: str | None
    extra: tuple[tuple[str, str], ...]
    status: int


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Mapping[str, str], form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class ForeignIdP:
    """Authlib's authorization server on http://127.0.0.1:PORT; see the module docstring."""

    def __init__(
        self,
        *,
        clients: tuple[IdPClient, ...] = (PUBLIC,),
        access_token_ttl: int = 20,
        rotate: bool = True,
        send_expires_in: bool = True,
    ) -> None:
        self.clients = {c.client_id: c for c in clients}
        self.access_token_ttl = access_token_ttl
        self.port = free_loopback_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.token_endpoint = f"{self.issuer}/oauth2/token"
        self.revocation_endpoint = f"{self.issuer}/oauth2/revoke"
        self.requests: list[Seen] = []
        # Act on the next token request (rotate), then answer only after this many seconds:
        # longer than the operator waits, so the answer is lost.
        self.lose_next_answer = False
        self.lost_answer_delay = 8.0
        self._lock = threading.Lock()
        self._by_refresh: dict[str, _Token] = {}
        self._server = self._authorization_server(rotate, send_expires_in)
        app = Starlette(
            routes=[
                Route("/oauth2/token", self._token, methods=["POST"]),
                Route("/oauth2/revoke", self._revoke, methods=["POST"]),
                Route("/.well-known/oauth-authorization-server", self._metadata, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uvicorn.run, name="foreign-idp", daemon=True)

    # -- what a person does in the provider's UI ----------------------------------------------

    def issue(self, client_id: str | None = None, scope: str | None = None) -> str:
        """A new refresh token for `client_id` (the first client by default), as a provider's
        UI hands it out once."""
        client = self.clients[client_id or next(iter(self.clients))]
        value = "idp_rt_" + secrets.token_urlsafe(32)
        token = _Token(
            client_id=client.client_id,
            refresh_token=value,
            access_token="",
            scope=scope if scope is not None else client.scope,
            issued_at=time.time(),
            expires_in=self.access_token_ttl,
        )
        with self._lock:
            self._by_refresh[value] = token
        return value

    def disable(self, refresh_token: str) -> None:
        """Revoke a refresh token behind the operator's back (the UI's Disable)."""
        with self._lock:
            self._by_refresh[refresh_token].revoked = True

    def revoked(self, refresh_token: str) -> bool:
        with self._lock:
            token = self._by_refresh.get(refresh_token)
        return token is None or token.revoked

    def live_refresh_tokens(self, client_id: str) -> list[str]:
        """The refresh tokens of `client_id` that still work (test-side only)."""
        with self._lock:
            return [
                t.refresh_token
                for t in self._by_refresh.values()
                if t.client_id == client_id and not t.revoked
            ]

    def access_token_valid(self, access_token: str) -> bool:
        with self._lock:
            for t in self._by_refresh.values():
                if t.access_token == access_token:
                    return time.time() < t.issued_at + t.expires_in
        return False

    def token_requests(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if s.path == "/oauth2/token"]

    # -- Authlib ------------------------------------------------------------------------------

    def _authorization_server(self, rotate: bool, send_expires_in: bool) -> AuthorizationServer:
        idp = self

        class Server(AuthorizationServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> IdPClient | None:
                return idp.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                old: _Token = request.refresh_token
                new = _Token(
                    client_id=request.client.client_id,
                    refresh_token=token.get("refresh_token") or old.refresh_token,
                    access_token=token["access_token"],
                    scope=token.get("scope", old.scope),
                    issued_at=time.time(),
                    expires_in=idp.access_token_ttl,
                )
                if not send_expires_in:
                    token.pop("expires_in", None)
                with idp._lock:
                    idp._by_refresh[new.refresh_token] = new

            def create_oauth2_request(self, request: _Request) -> _Request:
                return request

            def create_json_request(self, request: _Request) -> JsonRequest:
                raise NotImplementedError

            def handle_response(
                self, status: int, body: Any, headers: list[tuple[str, str]]
            ) -> tuple[int, Any, list[tuple[str, str]]]:
                return status, body, headers

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                pass

        class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS: ClassVar = list(_AUTH_METHODS)
            INCLUDE_NEW_REFRESH_TOKEN = rotate

            def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
                with idp._lock:
                    token = idp._by_refresh.get(refresh_token)
                return token if token is not None and not token.revoked else None

            def authenticate_user(self, refresh_token: _Token) -> str:
                return "user-1"

            def revoke_old_credential(self, refresh_token: _Token) -> None:
                if rotate:  # the old one stops working at once, no grace period
                    with idp._lock:
                        refresh_token.revoked = True

        class Revocation(RevocationEndpoint):  # type: ignore[misc]
            CLIENT_AUTH_METHODS: ClassVar = list(_AUTH_METHODS)

            def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
                with idp._lock:
                    return idp._by_refresh.get(token_string)

            def revoke_token(self, token: _Token, request: OAuth2Request) -> None:
                with idp._lock:
                    token.revoked = True

        server = Server()
        server.register_grant(RefreshTokenGrant)
        server.register_endpoint(Revocation)
        server.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: "idp_at_" + secrets.token_urlsafe(24),
                refresh_token_generator=lambda **_: "idp_rt_" + secrets.token_urlsafe(32),
                expires_generator=lambda client, grant_type: self.access_token_ttl,
            ),
        )
        return server

    async def _oauth_request(self, request: Request) -> _Request:
        form = {k: str(v) for k, v in (await request.form()).items()}
        # Starlette's headers: case-insensitive, as Authlib's lookups of "Authorization" need.
        return _Request(request.method, str(request.url), request.headers, form)

    def _record(self, path: str, req: _Request, status: int) -> None:
        form = req.form
        presented = form.get("refresh_token") or form.get("token")
        extra = tuple(
            sorted(
                (k, v)
                for k, v in form.items()
                if k not in ("grant_type", "refresh_token", "token", "client_secret")
            )
        )
        client = req.client
        seen = Seen(
            path=path,
            client_id=client.client_id if client is not None else form.get("client_id"),
            auth_method=req.auth_method,
            refresh_token_digest=digest(presented) if presented else None,
            scope=form.get("scope"),
            extra=extra,
            status=status,
        )
        with self._lock:
            self.requests.append(seen)

    async def _token(self, request: Request) -> Response:
        req = await self._oauth_request(request)
        status, body, headers = self._server.create_token_response(req)
        self._record("/oauth2/token", req, status)
        if self.lose_next_answer:
            self.lose_next_answer = False
            await asyncio.sleep(self.lost_answer_delay)  # acted on; the client gave up
        return JSONResponse(body, status_code=status, headers=dict(headers))

    async def _revoke(self, request: Request) -> Response:
        req = await self._oauth_request(request)
        status, body, headers = self._server.create_endpoint_response("revocation", req)
        self._record("/oauth2/revoke", req, status)
        return JSONResponse(body, status_code=status, headers=dict(headers))

    async def _metadata(self, request: Request) -> Response:
        methods = sorted({c.auth_method for c in self.clients.values()})
        return JSONResponse(
            {
                "issuer": self.issuer,
                "token_endpoint": self.token_endpoint,
                "revocation_endpoint": self.revocation_endpoint,
                "grant_types_supported": ["refresh_token"],
                "token_endpoint_auth_methods_supported": methods,
                "revocation_endpoint_auth_methods_supported": methods,
            }
        )

    # -- lifetime -----------------------------------------------------------------------------

    def __enter__(self) -> ForeignIdP:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the foreign IdP did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=15)

    def values(self) -> Iterator[str]:
        """Every token value the IdP handed out, for the leak scans."""
        with self._lock:
            tokens = list(self._by_refresh.values())
        for t in tokens:
            yield t.refresh_token
            if t.access_token:
                yield t.access_token
