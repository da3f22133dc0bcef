"""Metrics, logs, rate limit, size limit, health, legacy paths, OpenAPI."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from apitoken_service.api.app import create_app
from apitoken_service.logs import JsonFormatter
from apitoken_service.settings import Settings
from support.tokenservice import ApiSession

from .conftest import BASE_URL, FakeClock

pytestmark = pytest.mark.service


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_routes_time_the_token_endpoint_and_count_tokens(
    admin: ApiSession,
) -> None:
    token = await admin.create_token()
    disabled = await admin.create_token("off")
    await admin.http.post(admin.path(f"/tokens/{disabled['id']}/disable"), headers=admin.headers)
    await admin.refresh(token["refreshToken"])
    await admin.refresh("apit_rt_" + "x" * 43)
    await admin.http.get(admin.path(f"/tokens/{token['refreshToken']}"), headers=admin.headers)

    response = await admin.http.get("/metrics")

    assert response.status_code == 200
    found = samples(response.text)
    route = "/api/v1/workspaces/{workspace}/tokens"
    key = (("method", "POST"), ("route", route), ("status", "201"))
    assert found[("apitoken_service_http_requests_total", key)] == 2
    ok = (("method", "POST"), ("route", "/oauth2/token"), ("status", "200"))
    assert found[("apitoken_service_http_requests_total", ok)] == 1
    assert found[("apitoken_service_token_endpoint_seconds_count", (("status", "400"),))] == 1
    assert found[("apitoken_service_tokens", (("status", "active"),))] == 2  # with init's
    assert found[("apitoken_service_tokens", (("status", "disabled"),))] == 1
    for value in (token["refreshToken"], token["accessToken"], admin.access_token):
        assert value not in response.text


async def test_logs_are_json_and_never_carry_token_values(
    admin: ApiSession, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    values = [admin.access_token, admin.refresh_token]
    token = await admin.create_token("logged", 3)
    values += [token["accessToken"], token["refreshToken"]]
    first = (await admin.refresh(token["refreshToken"])).json()
    values += [first["access_token"], first["refresh_token"]]
    clock.advance(60)
    await admin.refresh(token["refreshToken"])  # replay after grace: token disabled, warning
    await admin.http.post(
        "/oauth2/token", content=f"refresh_token={first['refresh_token']}&x=1&x=2"
    )
    await admin.http.post(
        admin.path("/tokens"),
        json={"name": token["refreshToken"], "lifetimeDays": "x"},
        headers=admin.headers,
    )
    bob = await admin.add_member("bob")
    values += [bob.access_token, bob.refresh_token]
    await admin.http.post("/oauth2/revoke", data={"token": bob.refresh_token})
    await admin.http.delete(admin.path(f"/tokens/{token['id']}"), headers=admin.headers)

    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    log = "\n".join(lines)
    assert "rotated refresh token replayed" in log and '"route": "/oauth2/token"' in log
    assert '"tokenId": "' + token["id"] + '"' in log
    for value in values + [v.removeprefix("apit_rt_") for v in values if v.startswith("apit_rt_")]:
        assert value not in log


@pytest.fixture
async def limited(settings: Settings, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    limited_settings = settings.model_copy(
        update={
            "token_rate_limit_per_second": 0.05,
            "token_rate_limit_burst": 3,
            "max_request_bytes": 2048,
        }
    )
    app = create_app(limited_settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


async def test_token_endpoint_rate_limit_answers_429_with_retry_after(
    limited: httpx.AsyncClient,
) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "apit_rt_" + "y" * 43}
    statuses = [(await limited.post("/oauth2/token", data=form)).status_code for _ in range(3)]
    limited_response = await limited.post("/oauth2/token", data=form)

    assert statuses == [400, 400, 400]
    assert limited_response.status_code == 429
    # One request per 20 s once the burst of 3 is spent: a slow machine cannot refill it here.
    assert 1 <= int(limited_response.headers["retry-after"]) <= 20
    assert limited_response.json()["error"] == "temporarily_unavailable"
    # Other endpoints are not limited.
    assert (await limited.get("/healthz")).status_code == 200


async def test_request_size_limit(limited: httpx.AsyncClient) -> None:
    response = await limited.post(
        "/api/v1/workspaces/acme/tokens",
        content=b"{" + b" " * 4096 + b"}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_token_endpoint_refuses_large_bodies(limited: httpx.AsyncClient) -> None:
    by_length = await limited.post(
        "/oauth2/token",
        content=b"grant_type=refresh_token&refresh_token=" + b"x" * 4096,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 1024

    # Without Content-Length: counted as it arrives.
    by_count = await limited.post(
        "/oauth2/token",
        content=streamed(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    for response in (by_length, by_count):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 413


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v4/apiAccessTokens"),
        ("POST", "/v4/apiAccessTokens"),
        ("GET", "/v4/apiAccessTokens/42"),
        ("DELETE", "/v4/apiAccessTokens/42"),
    ],
)
async def test_legacy_paths_are_gone(http: httpx.AsyncClient, method: str, path: str) -> None:
    response = await http.request(method, path)
    assert response.status_code == 410
    assert response.headers["content-type"] == "application/problem+json"
    assert "/api/v1/workspaces/{workspace}/tokens" in response.json()["detail"]


async def test_openapi_describes_the_api(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert {
        "/api/v1/workspaces/{workspace}/tokens",
        "/api/v1/workspaces/{workspace}/tokens/{token_id}",
        "/api/v1/workspaces/{workspace}/tokens/{token_id}/disable",
        "/api/v1/workspaces/{workspace}/tokens/bulk",
        "/api/v1/workspaces/{workspace}/members",
        "/oauth2/token",
        "/oauth2/revoke",
        "/oauth2/introspect",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    } <= set(spec["paths"])
    token_form = spec["paths"]["/oauth2/token"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in token_form


async def test_unexpected_errors_answer_500_and_log_only_the_exception_type(
    app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "apit_rt_" + "s" * 43

    async def boom() -> None:
        raise RuntimeError(f"something quoted a value: {secret}")

    app.add_api_route("/boom-for-test", boom)
    caplog.set_level(logging.INFO)

    response = await http.get("/boom-for-test")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert secret not in response.text
    log = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert '"error": "RuntimeError"' in log
    assert secret not in log


async def test_startup_objects_are_kept_out_of_full_collections(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # A full collection now scans only what requests leave behind.
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
