"""Token-service and token-endpoint clients over httpx.MockTransport: requests, results, errors,
and no token value in any exception."""

import base64
import json
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apitoken_operator.crd import reasons
from apitoken_operator.providers.apitoken import TokenServiceClient
from apitoken_operator.providers.errors import (
    BadRequest,
    InvalidGrant,
    NotFound,
    ServerError,
    ServiceError,
    Timeout,
    Unauthorized,
    Unreachable,
)
from apitoken_operator.providers.http import ssl_context
from apitoken_operator.providers.oauth2 import TokenEndpointClient
from support.clock import T0

pytestmark = pytest.mark.unit

BEARER = "operator-bearer-secret-value"
ACCESS = "new-access-secret-value"
REFRESH = "apitok_rt_presented-secret-value"
NEW_REFRESH = "apitok_rt_rotated-secret-value"
SECRETS = (BEARER, ACCESS, REFRESH, NEW_REFRESH)

Handler = Callable[[httpx.Request], httpx.Response]


def metadata(token_id: str = "tok-1", **extra: object) -> dict[str, object]:
    return {
        "id": token_id,
        "name": "apps/billing",
        "workspace": "w1",
        "owner": "operator",
        "status": "active",
        "createdAt": "2026-11-28T12:00:00Z",
        "expiresAt": "2027-02-26T12:00:00Z",
        "lastUsedAt": None,
        "externalRef": "uid-1",
        **extra,
    }


def service(handler: Handler) -> TokenServiceClient:
    async def bearer() -> str:
        return BEARER

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TokenServiceClient(http, base_url="http://svc/", workspace="w1", bearer=bearer)


def endpoint(handler: Handler, client_id: str | None = "op") -> TokenEndpointClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return TokenEndpointClient(
        http, token_endpoint="http://svc/oauth2/token", client_id=client_id, clock=lambda: T0
    )


def assert_no_secret(exc: BaseException) -> None:
    texts = [
        str(exc),
        repr(exc),
        str(exc.__cause__),
        str(exc.__context__ if not exc.__suppress_context__ else ""),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def test_create_token_sends_name_lifetime_and_external_ref() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {
            **metadata(),
            "accessToken": ACCESS,
            "accessTokenExpiresAt": "2026-11-28T13:00:00Z",
            "refreshToken": REFRESH,
        }
        return httpx.Response(201, json=body)

    created = await service(handler).create_token(
        name="apps/billing", lifetime_days=90, external_ref="uid-1"
    )
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/v1/workspaces/w1/tokens")
    assert request.headers["Authorization"] == f"Bearer {BEARER}"
    assert json.loads(request.content) == {
        "name": "apps/billing",
        "lifetimeDays": 90,
        "externalRef": "uid-1",
    }
    assert created.metadata.id == "tok-1"
    assert created.values.access_token == ACCESS and created.values.refresh_token == REFRESH
    assert created.values.access_token_expires_at == T0 + timedelta(hours=1)
    assert created.refresh_token_expires_at == datetime(2027, 2, 26, 12, tzinfo=UTC)
    for secret in SECRETS:
        assert secret not in repr(created)


async def test_list_follows_next_cursor_and_passes_the_owner() -> None:
    pages = {
        None: {"items": [metadata("a"), metadata("b")], "next": "c1"},
        "c1": {"items": [metadata("c", status="disabled")], "next": None},
    }
    seen: list[dict[str, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.url.query.decode())
        seen.append(query)
        return httpx.Response(200, json=pages[query.get("cursor", [None])[0]])

    tokens = await service(handler).list_tokens(external_ref="uid-1", owner="*")
    assert [(t.id, t.status) for t in tokens] == [
        ("a", "active"),
        ("b", "active"),
        ("c", "disabled"),
    ]
    assert seen[0]["externalRef"] == ["uid-1"] and seen[0]["owner"] == ["*"]
    assert seen[1]["cursor"] == ["c1"]


@pytest.mark.parametrize(
    ("call", "method", "path"),
    [
        ("get", "GET", "/api/v1/workspaces/w1/tokens/tok%2F1"),
        ("disable", "POST", "/api/v1/workspaces/w1/tokens/tok%2F1/disable"),
        ("delete", "DELETE", "/api/v1/workspaces/w1/tokens/tok%2F1"),
    ],
    ids=["get", "disable", "delete"],
)
async def test_token_calls_hit_the_right_paths(call: str, method: str, path: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=metadata("tok/1", status="disabled"))

    client = service(handler)
    if call == "get":
        assert (await client.get_token("tok/1")).id == "tok/1"
    elif call == "disable":
        assert (await client.disable_token("tok/1")).status == "disabled"
    else:
        await client.delete_token("tok/1")
    (request,) = seen
    assert (request.method, request.url.raw_path.decode()) == (method, path)


def problem(status: int, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "reason", "retryable", "text"),
    [
        (
            lambda r: problem(401, "bad bearer"),
            Unauthorized,
            reasons.UNAUTHORIZED,
            False,
            "401 bad bearer",
        ),
        (lambda r: problem(403, "not an admin"), Unauthorized, reasons.UNAUTHORIZED, False, "403"),
        (lambda r: problem(404, "no such token"), NotFound, reasons.NOT_FOUND, False, "404"),
        (
            lambda r: problem(422, "lifetimeDays: must be a JSON integer"),
            BadRequest,
            reasons.BAD_REQUEST,
            False,
            "lifetimeDays: must be a JSON integer",
        ),
        (lambda r: problem(503, "db down"), ServerError, reasons.SERVICE_ERROR, True, "503"),
        (
            lambda r: httpx.Response(502, text="<html>"),
            ServerError,
            reasons.SERVICE_ERROR,
            True,
            "502",
        ),
        (
            raising(httpx.ConnectError("connection refused")),
            Unreachable,
            reasons.SERVICE_UNREACHABLE,
            True,
            "ConnectError",
        ),
        (
            raising(httpx.ReadTimeout("slow")),
            Timeout,
            reasons.SERVICE_UNREACHABLE,
            True,
            "timed out",
        ),
        (
            lambda r: httpx.Response(200, json={"nope": 1}),
            ServerError,
            reasons.SERVICE_ERROR,
            True,
            "malformed",
        ),
        (
            lambda r: problem(400, f"do not echo {BEARER}"),
            BadRequest,
            reasons.BAD_REQUEST,
            False,
            "[redacted]",
        ),
    ],
    ids=[
        "401",
        "403",
        "404",
        "422-problem-detail",
        "503",
        "502-not-json",
        "unreachable",
        "timeout",
        "malformed",
        "echoed-bearer-redacted",
    ],
)
async def test_management_errors(
    handler: Handler, error: type[ServiceError], reason: str, retryable: bool, text: str
) -> None:
    with pytest.raises(error) as caught:
        await service(handler).get_token("tok-1")
    exc = caught.value
    assert (exc.reason, exc.retryable) == (reason, retryable)
    assert text in str(exc)
    assert_no_secret(exc)


async def test_rate_limit_carries_retry_after() -> None:
    client = service(lambda r: httpx.Response(429, headers={"Retry-After": "3"}, json={}))
    with pytest.raises(ServerError) as caught:
        await client.list_tokens(external_ref="uid-1")
    assert caught.value.retry_after == 3.0 and caught.value.retryable


# Token endpoint -------------------------------------------------------------------------------


def token_response(**overrides: object) -> httpx.Response:
    body: dict[str, object] = {
        "access_token": ACCESS,
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": NEW_REFRESH,
        "refresh_token_expires_in": 86400,
        **overrides,
    }
    return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


@pytest.mark.parametrize("client_id", ["op", None], ids=["with-client-id", "public-client-no-id"])
async def test_refresh_posts_the_grant_and_reads_expires_in(client_id: str | None) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return token_response()

    result = await endpoint(handler, client_id).refresh(REFRESH)
    (request,) = seen
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.content.decode())
    expected = {"grant_type": ["refresh_token"], "refresh_token": [REFRESH]}
    if client_id:
        expected["client_id"] = [client_id]
    assert form == expected
    assert result.values.access_token == ACCESS
    assert result.values.refresh_token == NEW_REFRESH and result.rotated
    assert result.values.access_token_expires_at == T0 + timedelta(minutes=5)
    assert result.refresh_token_expires_at == T0 + timedelta(days=1)
    assert result.obtained_at == T0
    for secret in SECRETS:
        assert secret not in repr(result)


async def test_refresh_without_rotation_keeps_the_presented_refresh_token() -> None:
    result = await endpoint(
        lambda r: token_response(refresh_token=None, refresh_token_expires_in=None)
    ).refresh(REFRESH)
    assert result.values.refresh_token == REFRESH and not result.rotated
    assert result.refresh_token_expires_at is None


def oauth_error(status: int, error: str, description: str = "") -> Handler:
    return lambda r: httpx.Response(status, json={"error": error, "error_description": description})


@pytest.mark.parametrize(
    ("handler", "error", "retryable"),
    [
        (oauth_error(400, "invalid_grant", "token disabled"), InvalidGrant, False),
        (oauth_error(400, "invalid_grant", f"replayed {REFRESH}"), InvalidGrant, False),
        (oauth_error(401, "invalid_client"), Unauthorized, False),
        (oauth_error(400, "invalid_request", "missing grant"), BadRequest, False),
        (oauth_error(429, "slow_down"), ServerError, True),
        (lambda r: httpx.Response(500, text="oops"), ServerError, True),
        (lambda r: httpx.Response(200, json={"token_type": "Bearer"}), ServerError, True),
        (raising(httpx.ConnectError(f"refused {REFRESH}")), Unreachable, True),
        (raising(httpx.ConnectTimeout("slow")), Timeout, True),
    ],
    ids=[
        "invalid-grant",
        "invalid-grant-echoing-token",
        "invalid-client",
        "invalid-request",
        "rate-limited",
        "500",
        "malformed-success",
        "unreachable",
        "timeout",
    ],
)
async def test_refresh_errors_never_carry_token_values(
    handler: Handler, error: type[ServiceError], retryable: bool
) -> None:
    with pytest.raises(error) as caught:
        await endpoint(handler).refresh(REFRESH)
    assert caught.value.retryable is retryable
    assert_no_secret(caught.value)
    assert caught.value.__cause__ is None


def test_ssl_context_trusts_the_ca_bundle() -> None:
    assert ssl_context(None) is True
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    context = ssl_context(base64.b64encode(pem).decode())
    assert isinstance(context, ssl.SSLContext)
    assert any(
        ("commonName", "test-ca") in rdn for c in context.get_ca_certs() for rdn in c["subject"]
    )
