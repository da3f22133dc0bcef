"""The refresh-only token endpoint client against the answers real identity providers give, over
httpx.MockTransport: client authentication, request shape, rotation on and off, lifetimes from
expires_in, the JWT's exp or the default, Retry-After, errors that never carry a value or a
body, RFC 7009 revocation and RFC 8414 / OpenID discovery."""

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote

import httpx
import jwt
import pytest

from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import ClientAuthMethod, TokenWorkspaceSpec
from apitoken_operator.providers.discovery import Discovery, metadata_urls
from apitoken_operator.providers.errors import (
    BadRequest,
    ClientRejected,
    ClientSecretMissing,
    InvalidGrant,
    ResponseLost,
    ServerError,
    ServiceError,
    Timeout,
)
from apitoken_operator.providers.oauth2 import (
    ClientAuth,
    RequestShape,
    TokenEndpointClient,
    jwt_expiry,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ENDPOINT = "https://idp.example/oauth2/token"
REVOKE = "https://idp.example/oauth2/revoke"
REFRESH = "rt-presented-secret-value"
NEW_REFRESH = "rt-rotated-secret-value"
ACCESS = "at-new-secret-value"
CLIENT_SECRET = "client-secret-value/with+odd:chars"
SECRETS = (REFRESH, NEW_REFRESH, ACCESS, CLIENT_SECRET)

Handler = Callable[[httpx.Request], httpx.Response]


def client(
    handler: Handler,
    *,
    method: ClientAuthMethod = ClientAuthMethod.NONE,
    secret: str | None = None,
    shape: RequestShape | None = None,
    token_endpoint: str | None = ENDPOINT,
    revocation_endpoint: str | None = None,
    issuer: str | None = None,
    discovery: Discovery | None = None,
) -> TokenEndpointClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TokenEndpointClient(
        http,
        token_endpoint=token_endpoint,
        auth=ClientAuth(client_id="my app", method=method, client_secret=secret),
        shape=shape,
        issuer=issuer,
        revocation_endpoint=revocation_endpoint,
        discovery=discovery,
        clock=lambda: T0,
    )


def answer(**overrides: object) -> httpx.Response:
    body: dict[str, object] = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 20,
        "refresh_token": NEW_REFRESH,
        **overrides,
    }
    return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


def recording(seen: list[httpx.Request], response: Callable[[], httpx.Response]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response()

    return handler


def form_of(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


def assert_clean(exc: BaseException, *also: str) -> None:
    for text in (str(exc), repr(exc)):
        for value in (*SECRETS, *also):
            assert value not in text, text
    assert exc.__cause__ is None


# Client authentication and request shape -----------------------------------------------------


async def test_client_secret_basic_sends_the_form_urlencoded_pair_in_the_header() -> None:
    seen: list[httpx.Request] = []
    await client(
        recording(seen, answer), method=ClientAuthMethod.CLIENT_SECRET_BASIC, secret=CLIENT_SECRET
    ).refresh(REFRESH)
    (request,) = seen
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert scheme == "Basic"
    # RFC 6749 2.3.1: each part form-urlencoded first (the space, "/", "+" and ":" escaped).
    assert (user, password) == ("my%20app", "client-secret-value%2Fwith%2Bodd%3Achars")
    assert (unquote(user), unquote(password)) == ("my app", CLIENT_SECRET)
    form = form_of(request)
    assert "client_secret" not in form and "client_id" not in form
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == [REFRESH]


async def test_client_secret_post_sends_id_and_secret_in_the_form() -> None:
    seen: list[httpx.Request] = []
    await client(
        recording(seen, answer), method=ClientAuthMethod.CLIENT_SECRET_POST, secret=CLIENT_SECRET
    ).refresh(REFRESH)
    (request,) = seen
    assert "authorization" not in request.headers
    form = form_of(request)
    assert form["client_id"] == ["my app"] and form["client_secret"] == [CLIENT_SECRET]


async def test_a_public_client_sends_its_id_and_no_secret() -> None:
    seen: list[httpx.Request] = []
    await client(recording(seen, answer)).refresh(REFRESH)
    (request,) = seen
    assert "authorization" not in request.headers
    assert form_of(request)["client_id"] == ["my app"]
    assert "client_secret" not in form_of(request)


@pytest.mark.parametrize(
    "method", [ClientAuthMethod.CLIENT_SECRET_BASIC, ClientAuthMethod.CLIENT_SECRET_POST]
)
async def test_a_missing_client_secret_is_said_before_any_request(
    method: ClientAuthMethod,
) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(ClientSecretMissing) as caught:
        await client(recording(seen, answer), method=method, secret=None).refresh(REFRESH)
    assert seen == []
    assert caught.value.reason == reasons.CLIENT_SECRET_MISSING and not caught.value.retryable
    assert str(method) in caught.value.message


async def test_scope_and_extra_params_go_with_every_refresh() -> None:
    seen: list[httpx.Request] = []
    shape = RequestShape(
        scope="read:reports offline_access",
        extra_params={"audience": "https://api.example", "resource": "https://api.example/v2"},
    )
    api = client(recording(seen, answer), shape=shape)
    await api.refresh(REFRESH)
    await api.refresh(NEW_REFRESH)
    for request in seen:
        form = form_of(request)
        assert form["scope"] == ["read:reports offline_access"]
        assert form["audience"] == ["https://api.example"]
        assert form["resource"] == ["https://api.example/v2"]


def test_extra_params_may_not_override_what_the_operator_sets() -> None:
    with pytest.raises(ValueError, match="extraParams may not set client_secret, grant_type"):
        TokenWorkspaceSpec.model_validate(
            {
                "provider": "oauth2",
                "oauth2": {
                    "tokenEndpoint": ENDPOINT,
                    "extraParams": {"grant_type": "password", "client_secret": "x"},
                },
            }
        )


@pytest.mark.parametrize(
    ("oauth2", "method", "error"),
    [
        ({"tokenEndpoint": ENDPOINT}, ClientAuthMethod.NONE, None),
        (
            {"tokenEndpoint": ENDPOINT, "clientId": "c", "clientSecretRef": {"name": "s"}},
            ClientAuthMethod.CLIENT_SECRET_BASIC,
            None,
        ),
        (
            {
                "issuer": "https://idp.example",
                "clientId": "c",
                "clientAuthMethod": "client_secret_post",
                "clientSecretRef": {"name": "s"},
            },
            ClientAuthMethod.CLIENT_SECRET_POST,
            None,
        ),
        ({"clientId": "c"}, None, "tokenEndpoint or issuer"),
        (
            {"tokenEndpoint": ENDPOINT, "clientId": "c", "clientAuthMethod": "client_secret_basic"},
            None,
            "needs clientSecretRef",
        ),
        (
            {"tokenEndpoint": ENDPOINT, "clientSecretRef": {"name": "s"}},
            None,
            "needs clientId",
        ),
        (
            {
                "tokenEndpoint": ENDPOINT,
                "clientId": "c",
                "clientAuthMethod": "none",
                "clientSecretRef": {"name": "s"},
            },
            None,
            "remove clientSecretRef",
        ),
    ],
    ids=[
        "public-default-none",
        "secret-default-basic",
        "post-with-issuer",
        "no-endpoint",
        "basic-without-secret",
        "secret-without-client-id",
        "none-with-secret",
    ],
)
def test_client_settings_resolve_or_are_refused(
    oauth2: dict[str, object], method: ClientAuthMethod | None, error: str | None
) -> None:
    body = {"provider": "oauth2", "oauth2": oauth2}
    if error is not None:
        with pytest.raises(ValueError, match=error):
            TokenWorkspaceSpec.model_validate(body)
        return
    spec = TokenWorkspaceSpec.model_validate(body)
    assert spec.oauth2 is not None and spec.oauth2.resolved_client_auth_method is method


# Answers -------------------------------------------------------------------------------------


async def test_rotation_on_replaces_the_refresh_token() -> None:
    result = await client(lambda r: answer()).refresh(REFRESH)
    assert result.rotated and result.values.refresh_token == NEW_REFRESH
    assert result.values.access_token_expires_at == T0 + timedelta(seconds=20)


@pytest.mark.parametrize("echo", [None, REFRESH], ids=["absent", "same-value-echoed"])
async def test_rotation_off_keeps_the_current_refresh_token(echo: str | None) -> None:
    result = await client(lambda r: answer(refresh_token=echo)).refresh(REFRESH)
    assert not result.rotated and result.values.refresh_token == REFRESH


def signed(exp: datetime) -> str:
    # Any key: the operator reads exp without verifying (the API verifies the token).
    return jwt.encode({"sub": "u", "exp": int(exp.timestamp())}, "k" * 32, algorithm="HS256")


async def test_without_expires_in_the_jwt_exp_counts() -> None:
    exp = T0 + timedelta(minutes=7)
    token = signed(exp)
    result = await client(lambda r: answer(expires_in=None, access_token=token)).refresh(REFRESH)
    assert result.values.access_token_expires_at == exp
    assert jwt_expiry("not-a-jwt") is None and jwt_expiry("a.b.c") is None


async def test_without_expires_in_or_a_jwt_the_default_lifetime_counts() -> None:
    shape = RequestShape(default_lifetime=timedelta(hours=1))
    result = await client(lambda r: answer(expires_in=None), shape=shape).refresh(REFRESH)
    assert result.values.access_token_expires_at == T0 + timedelta(hours=1)
    spec = TokenWorkspaceSpec.model_validate(
        {"provider": "oauth2", "oauth2": {"tokenEndpoint": ENDPOINT}}
    )
    assert spec.oauth2 is not None
    assert spec.oauth2.resolved_default_lifetime == timedelta(minutes=5)


async def test_a_refresh_token_whose_end_is_unknown() -> None:
    result = await client(lambda r: answer()).refresh(REFRESH)
    assert result.refresh_token_expires_at is None
    known = await client(lambda r: answer(refresh_token_expires_in=3600)).refresh(REFRESH)
    assert known.refresh_token_expires_at == T0 + timedelta(hours=1)


async def test_extra_fields_are_ignored() -> None:
    result = await client(
        lambda r: answer(id_token="eyJ.x.y", scope="openid", ext_expires_in=40, foo={"bar": 1})
    ).refresh(REFRESH)
    assert result.values.access_token == ACCESS
    assert result.values.access_token_expires_at == T0 + timedelta(seconds=20)


@pytest.mark.parametrize(
    ("status", "header", "wait"),
    [
        (429, "7", 7.0),
        (503, "120", 120.0),
        (503, "Sat, 28 Nov 2099 12:00:00 GMT", None),
        (503, None, None),
    ],
    ids=["429-seconds", "503-seconds", "503-http-date", "503-without"],
)
async def test_retry_after_is_carried(status: int, header: str | None, wait: float | None) -> None:
    headers = {"Retry-After": header} if header else {}
    handler: Handler = lambda r: httpx.Response(  # noqa: E731
        status, headers=headers, json={"error": "temporarily_unavailable"}
    )
    with pytest.raises(ServerError) as caught:
        await client(handler).refresh(REFRESH)
    assert caught.value.retryable
    if header and wait is None:
        assert caught.value.retry_after is not None and caught.value.retry_after > 3600
    else:
        assert caught.value.retry_after == wait


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "lost"),
    [
        (lambda r: httpx.Response(500, json={"error": "server_error"}), ServerError, False),
        (lambda r: httpx.Response(502, text="Bad gateway"), ServerError, False),
        (raising(httpx.ConnectTimeout("connect")), Timeout, False),
        (raising(httpx.ReadTimeout("read")), ResponseLost, True),
        (raising(httpx.RemoteProtocolError("closed")), ResponseLost, True),
    ],
    ids=["500", "502-text", "connect-timeout", "read-timeout", "dropped-mid-answer"],
)
async def test_5xx_and_timeouts_are_retried_with_backoff(
    handler: Handler, error: type[ServiceError], lost: bool
) -> None:
    with pytest.raises(error) as caught:
        await client(handler).refresh(REFRESH)
    assert caught.value.retryable
    assert isinstance(caught.value, ResponseLost) is lost
    assert_clean(caught.value)


HTML = f"<html><body>Sign in again {REFRESH} {CLIENT_SECRET}</body></html>"


@pytest.mark.parametrize(
    ("status", "error"),
    [(200, ServerError), (502, ServerError), (400, BadRequest), (401, ClientRejected)],
    ids=["200-html", "502-html", "400-html", "401-html"],
)
async def test_a_body_that_is_not_json_names_endpoint_and_status_never_the_body(
    status: int, error: type[ServiceError]
) -> None:
    handler: Handler = lambda r: httpx.Response(  # noqa: E731
        status, text=HTML, headers={"content-type": "text/html"}
    )
    with pytest.raises(error) as caught:
        await client(
            handler, method=ClientAuthMethod.CLIENT_SECRET_POST, secret=CLIENT_SECRET
        ).refresh(REFRESH)
    message = caught.value.message
    assert ENDPOINT in message and str(status) in message and "not JSON" in message
    assert "Sign in again" not in message and "<html>" not in message
    assert_clean(caught.value)


@pytest.mark.parametrize(
    ("body", "error", "reason"),
    [
        (
            {"error": "invalid_grant", "error_description": "Token is not active"},
            InvalidGrant,
            reasons.REFRESH_TOKEN_REJECTED,
        ),
        (
            {"error": "invalid_client", "error_description": f"bad {CLIENT_SECRET}"},
            ClientRejected,
            reasons.CLIENT_REJECTED,
        ),
        ({"error": "unauthorized_client"}, ClientRejected, reasons.CLIENT_REJECTED),
        ({"error": "invalid_scope"}, BadRequest, reasons.BAD_REQUEST),
    ],
    ids=["invalid-grant", "invalid-client-echoing-secret", "unauthorized-client", "invalid-scope"],
)
async def test_oauth_errors(body: dict[str, str], error: type[ServiceError], reason: str) -> None:
    status = 401 if body["error"] == "invalid_client" else 400
    with pytest.raises(error) as caught:
        await client(
            lambda r: httpx.Response(status, json=body),
            method=ClientAuthMethod.CLIENT_SECRET_BASIC,
            secret=CLIENT_SECRET,
        ).refresh(REFRESH)
    assert caught.value.reason == reason and not caught.value.retryable
    assert ENDPOINT in caught.value.message
    assert_clean(caught.value)


async def test_malformed_success_names_the_field_only() -> None:
    with pytest.raises(ServerError) as caught:
        await client(lambda r: httpx.Response(200, json={"token_type": "Bearer"})).refresh(REFRESH)
    assert "access_token" in caught.value.message
    with pytest.raises(ServerError) as caught:
        await client(lambda r: answer(expires_in=ACCESS)).refresh(REFRESH)
    assert_clean(caught.value)


# Revocation ----------------------------------------------------------------------------------


async def test_revocation_posts_the_refresh_token_with_its_hint_and_the_client() -> None:
    seen: list[httpx.Request] = []
    api = client(
        recording(seen, lambda: httpx.Response(200)),
        method=ClientAuthMethod.CLIENT_SECRET_POST,
        secret=CLIENT_SECRET,
        revocation_endpoint=REVOKE,
    )
    assert await api.revoke(REFRESH) is True
    (request,) = seen
    assert str(request.url) == REVOKE
    form = form_of(request)
    assert form["token"] == [REFRESH] and form["token_type_hint"] == ["refresh_token"]
    assert form["client_secret"] == [CLIENT_SECRET]


async def test_without_a_revocation_endpoint_nothing_is_sent() -> None:
    seen: list[httpx.Request] = []
    assert await client(recording(seen, answer)).revoke(REFRESH) is False
    assert seen == []


async def test_a_refused_revocation_is_an_error_without_values() -> None:
    with pytest.raises(BadRequest) as caught:
        await client(
            lambda r: httpx.Response(400, json={"error": "unsupported_token_type"}),
            revocation_endpoint=REVOKE,
        ).revoke(REFRESH)
    assert "revocation" in caught.value.message and REVOKE in caught.value.message
    assert_clean(caught.value)


# Discovery -----------------------------------------------------------------------------------


def test_metadata_urls_follow_rfc8414_then_openid() -> None:
    assert metadata_urls("https://idp.example/realms/acme/") == (
        "https://idp.example/.well-known/oauth-authorization-server/realms/acme",
        "https://idp.example/realms/acme/.well-known/openid-configuration",
    )
    assert metadata_urls("https://idp.example")[0] == (
        "https://idp.example/.well-known/oauth-authorization-server"
    )


def idp(issuer: str, *, rfc8414: bool, seen: list[str]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        seen.append(f"{request.method} {url}")
        metadata = {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/protocol/openid-connect/token",
            "revocation_endpoint": f"{issuer}/protocol/openid-connect/revoke",
        }
        if "oauth-authorization-server" in url:
            return httpx.Response(200, json=metadata) if rfc8414 else httpx.Response(404)
        if url.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=metadata)
        if request.method == "POST" and url.endswith("/token"):
            return answer()
        if request.method == "POST" and url.endswith("/revoke"):
            return httpx.Response(200)
        return httpx.Response(404)

    return handler


@pytest.mark.parametrize("rfc8414", [True, False], ids=["rfc8414", "openid-fallback"])
async def test_endpoints_come_from_the_issuer_and_are_cached(rfc8414: bool) -> None:
    issuer = "https://idp.example/realms/acme"
    seen: list[str] = []
    discovery = Discovery(clock=lambda: T0)
    api = client(
        idp(issuer, rfc8414=rfc8414, seen=seen),
        token_endpoint=None,
        issuer=issuer,
        discovery=discovery,
    )
    await api.refresh(REFRESH)
    await api.refresh(NEW_REFRESH)
    assert await api.revoke(NEW_REFRESH) is True
    gets = [s for s in seen if s.startswith("GET")]
    assert len(gets) == (1 if rfc8414 else 2)  # fetched once, then from the cache
    posts = [s.split(" ", 1)[1] for s in seen if s.startswith("POST")]
    assert posts == [
        f"{issuer}/protocol/openid-connect/token",
        f"{issuer}/protocol/openid-connect/token",
        f"{issuer}/protocol/openid-connect/revoke",
    ]


async def test_a_set_token_endpoint_wins_over_the_issuer_metadata() -> None:
    issuer = "https://idp.example"
    seen: list[str] = []
    api = client(
        idp(issuer, rfc8414=True, seen=seen), token_endpoint=f"{issuer}/own/token", issuer=issuer
    )
    await api.refresh(REFRESH)
    assert seen == [f"POST {issuer}/own/token"]  # no metadata fetched for it


async def test_metadata_of_another_issuer_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"issuer": "https://evil.example", "token_endpoint": "https://evil/t"}
        )

    with pytest.raises(BadRequest, match=re.escape("names issuer 'https://evil.example'")):
        await client(handler, token_endpoint=None, issuer="https://idp.example").refresh(REFRESH)


async def test_an_issuer_without_metadata_says_to_set_the_endpoint() -> None:
    with pytest.raises(BadRequest, match=re.escape("set oauth2.tokenEndpoint")):
        await client(
            lambda r: httpx.Response(404), token_endpoint=None, issuer="https://idp.example"
        ).refresh(REFRESH)
