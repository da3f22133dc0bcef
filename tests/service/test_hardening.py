"""Issue 9: the defects found by attacking the service, each kept fixed by a test."""

from __future__ import annotations

import base64
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import jwt
import pytest
import sqlalchemy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apitoken_service.api.app import create_app
from apitoken_service.domain.service import TokenService
from apitoken_service.settings import Settings
from apitoken_service.startup import OpenedService, open_service
from support.tokenservice import ApiSession

from .conftest import BASE_URL, FakeClock

pytestmark = pytest.mark.service

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(admin: ApiSession) -> dict[str, object]:
    return jwt.decode(admin.access_token, options={"verify_signature": False})


def _foreign_tokens(admin: ApiSession) -> list[str]:
    """Tokens whose key this service does not publish: none, a made-up kid, a foreign key."""
    claims = _claims(admin)
    alg_none = _b64(b'{"alg":"none"}') + "." + _b64(b"{}") + "."
    foreign = Ed25519PrivateKey.generate()
    return [
        alg_none,
        jwt.encode(claims, foreign, algorithm="EdDSA", headers={"kid": "nope"}),
        jwt.encode(claims, foreign, algorithm="EdDSA"),
        _b64(json.dumps({"alg": "EdDSA", "kid": ["x"]}).encode()) + ".e30.sig",
    ]


# -- 1: an unknown or missing kid is an invalid token, not a 500 -------------------------------


async def test_unknown_kid_is_401_on_management_routes(admin: ApiSession) -> None:
    for token in _foreign_tokens(admin):
        for method, path in (("GET", "/tokens"), ("GET", "/members"), ("POST", "/tokens")):
            response = await admin.http.request(
                method, admin.path(path), headers={"authorization": f"Bearer {token}"}, json={}
            )
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_kid_introspects_inactive(admin: ApiSession) -> None:
    for token in _foreign_tokens(admin):
        response = await admin.http.post(
            "/oauth2/introspect", data={"token": token}, headers=admin.headers
        )
        assert response.status_code == 200 and response.json() == {"active": False}
        as_caller = await admin.http.post(
            "/oauth2/introspect",
            data={"token": token},
            headers={"authorization": f"Bearer {token}"},
        )
        assert as_caller.status_code == 401


# -- 8: error bodies quote only values of a known shape ----------------------------------------


async def test_errors_do_not_echo_unknown_values(admin: ApiSession) -> None:
    secret = admin.access_token
    for method, path in (
        ("GET", f"/tokens/{secret}"),
        ("POST", f"/tokens/{secret}/disable"),
        ("DELETE", f"/tokens/{secret}"),
        ("DELETE", f"/members/{secret}"),
    ):
        response = await admin.http.request(method, admin.path(path), headers=admin.headers)
        assert response.status_code == 404, response.text
        assert secret not in response.text and secret[:20] not in response.text
    repeated = await admin.http.post(
        "/oauth2/token",
        content=f"grant_type=refresh_token&refresh_token=x&{secret}=1&{secret}=2",
        headers=FORM,
    )
    assert repeated.status_code == 400 and secret not in repeated.text
    for route in ("/oauth2/revoke", "/oauth2/introspect"):
        response = await admin.http.post(
            route, content=f"token=x&{secret}=1&{secret}=2", headers={**FORM, **admin.headers}
        )
        # Unknown parameters are ignored, repeated or not (RFC 6749 section 3.2).
        assert response.status_code == 200 and secret not in response.text


async def test_errors_quote_ids_of_the_known_shape(admin: ApiSession) -> None:
    missing = "tk_0123456789ab0123456789abcdef"
    response = await admin.http.get(admin.path(f"/tokens/{missing}"), headers=admin.headers)
    assert response.status_code == 404 and missing in response.json()["detail"]
    repeated = await admin.http.post(
        "/oauth2/token", content="grant_type=refresh_token&grant_type=x", headers=FORM
    )
    assert "'grant_type' is repeated" in repeated.json()["error_description"]


async def test_one_form_parser_for_token_revoke_and_introspect(admin: ApiSession) -> None:
    """%FF is not UTF-8: all three endpoints refuse it alike (one parser, RFC 6749 appendix B)."""
    for route in ("/oauth2/token", "/oauth2/revoke", "/oauth2/introspect"):
        response = await admin.http.post(
            route, content="grant_type=refresh_token&token=%FF&refresh_token=%FF",
            headers={**FORM, **admin.headers},
        )  # fmt: skip
        assert response.status_code == 400, route
        assert response.json() == {
            "error": "invalid_request",
            "error_description": "the body is not a valid form",
        }


# -- 3: control characters are refused in names, and never reach SQL elsewhere ---------------

HOSTILE = ["a\x00b", "a\x1bb", "a\x7fb", "evil\u202etxt.exe", "a\u2066b"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_control_characters_in_names_are_422_naming_the_field(
    admin: ApiSession, value: str
) -> None:
    for body, field in (
        ({"name": value, "lifetimeDays": 1}, "name"),
        ({"name": "ok", "lifetimeDays": 1, "externalRef": value}, "externalRef"),
    ):
        response = await admin.http.post(admin.path("/tokens"), json=body, headers=admin.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
        assert "control characters" in response.json()["detail"]
    listed = await admin.http.get(
        admin.path("/tokens"), params={"owner": "*"}, headers=admin.headers
    )
    assert [t["name"] for t in listed.json()["items"]] == ["init"]


@pytest.mark.parametrize("value", HOSTILE)
async def test_control_characters_in_ids_owners_and_cursors_are_not_found(
    admin: ApiSession, value: str
) -> None:
    await admin.create_token("kept", 1)
    for params in ({"owner": value}, {"externalRef": value}, {"owner": "*", "externalRef": value}):
        response = await admin.http.get(admin.path("/tokens"), params=params, headers=admin.headers)
        assert response.status_code == 200 and response.json()["items"] == [], params
    cursor = _b64(value.encode())
    value = quote(value, safe="")
    for path in ("/tokens", "/members"):
        response = await admin.http.get(
            admin.path(path), params={"cursor": cursor}, headers=admin.headers
        )
        # A cursor that is not ours is a keyset position of its own text, never its content.
        assert response.status_code == 200, response.text
    for method, path in (
        ("GET", f"/tokens/{value}"),
        ("GET", f"/tokens/tk_{value}"),
        ("POST", f"/tokens/{value}/disable"),
        ("DELETE", f"/tokens/{value}"),
        ("DELETE", f"/members/{value}"),
    ):
        response = await admin.http.request(method, admin.path(path), headers=admin.headers)
        assert response.status_code == 404, (path, response.text)
    bulk = await admin.http.post(
        admin.path("/tokens/bulk"),
        json={"action": "disable", "ids": [unquote(value)]},
        headers=admin.headers,
    )
    assert bulk.status_code == 200 and bulk.json()["results"][0]["result"] == "notFound"


# -- 9: a body over the limit is 413 whether it has a Content-Length or is chunked ----------


def _chunks(data: bytes) -> AsyncIterator[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start : start + 8192]

    return stream()


async def test_oversized_body_is_413_with_or_without_content_length(admin: ApiSession) -> None:
    big = json.dumps({"name": "x" * 100_000, "lifetimeDays": 1}).encode()
    form = b"token=" + b"x" * 100_000
    for path, body, headers in (
        (admin.path("/tokens"), big, {"content-type": "application/json"}),
        (admin.path("/tokens/bulk"), big, {"content-type": "application/json"}),
        ("/oauth2/revoke", form, FORM),
        ("/oauth2/introspect", form, FORM),
        ("/oauth2/token", form, FORM),
    ):
        for content in (body, _chunks(body)):
            response = await admin.http.post(
                path,
                content=content,
                headers={**headers, **admin.headers},
            )
            assert response.status_code == 413, (path, response.text)
            assert response.json()["title"] == "Content too large"
            assert response.headers["content-type"] == "application/problem+json"


# -- 7: introspection answers from the same rule as the management API -----------------------


async def test_removed_member_access_token_is_inactive_and_refused(
    admin: ApiSession, member: ApiSession, clock: FakeClock
) -> None:
    bob_access = member.access_token
    alive = await admin.http.post(
        "/oauth2/introspect", data={"token": bob_access}, headers=admin.headers
    )
    assert alive.json()["active"] is True
    removed = await admin.http.delete(admin.path("/members/bob"), headers=admin.headers)
    assert removed.status_code == 204
    for readded in (False, True):
        introspected = await admin.http.post(
            "/oauth2/introspect", data={"token": bob_access}, headers=admin.headers
        )
        assert introspected.json() == {"active": False}, readded
        refused = await admin.http.get(admin.path("/tokens"), headers=member.headers)
        assert refused.status_code == 401
        if not readded:
            # Added again (a second later): the earlier access token stays refused.
            clock.advance(1)
            again = await admin.add_member("bob")
            assert (await admin.http.get(admin.path("/tokens"), headers=again.headers)).is_success


# -- 4: with a grace of 0, overlapping refreshes do not disable the token --------------------


@contextlib.asynccontextmanager
async def _service_with(
    settings: Settings, clock: FakeClock, **changes: object
) -> AsyncIterator[tuple[httpx.AsyncClient, OpenedService]]:
    application = create_app(settings.model_copy(update=changes), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client, application.state.runtime.require_opened()


async def test_grace_zero_answers_overlapping_refreshes_as_retries(
    settings: Settings, clock: FakeClock
) -> None:
    async with _service_with(settings, clock, rotation_grace_seconds=0) as (http, opened):
        issued = await opened.service.bootstrap("acme", "alice", 30, clock())
        grant = {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}
        results = []
        for _ in range(20):  # each one 40 ms after the other: all within the rotation's second
            results.append(await http.post("/oauth2/token", data=grant))
            clock.advance(0.04)
        assert [r.status_code for r in results] == [200] * 20
        assert len({r.json()["refresh_token"] for r in results}) == 1
        successor = results[0].json()["refresh_token"]
        nxt = await http.post("/oauth2/token", data={**grant, "refresh_token": successor})
        assert nxt.status_code == 200
        # Later than the overlap window, an earlier refresh token is a replay, as before.
        clock.advance(2)
        replay = await http.post("/oauth2/token", data=grant)
        assert replay.status_code == 400 and "disabled" in replay.json()["error_description"]


# -- 5: a rotation keeps the old key published for the serving lifetime, not its own --------


@pytest.mark.parametrize(("serving_ttl", "command_ttl"), [(7200, 3600), (2, 3600)])
async def test_rotation_unpublishes_the_old_key_after_the_serving_lifetime(
    settings: Settings, clock: FakeClock, serving_ttl: int, command_ttl: int
) -> None:
    async with _service_with(settings, clock, access_token_ttl_seconds=serving_ttl) as (
        http,
        opened,
    ):
        issued = await opened.service.bootstrap("acme", "alice", 30, clock())
        old_kid = jwt.get_unverified_header(issued.access_token.value)["kid"]
        # `apitoken-service rotate-signing-key`, run with its own (default) lifetime.
        command = await open_service(
            settings.model_copy(update={"access_token_ttl_seconds": command_ttl}), clock
        )
        try:
            await command.rotate_signing_key(clock)
        finally:
            await command.close()
        await opened.reload_keys(clock)

        async def published() -> list[str]:
            keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
            return [k["kid"] for k in keys]

        headers = {"authorization": f"Bearer {issued.access_token.value}"}
        clock.advance(serving_ttl - 1)  # the old access token is still valid: so is its key
        assert old_kid in await published()
        assert (await http.get("/api/v1/workspaces/acme/tokens", headers=headers)).is_success
        clock.advance(62)  # expired, plus the minute of slack: the key is gone
        assert old_kid not in await published()


# -- 6: revocation and introspection are rate limited; unknown tokens take the fast path -----


async def test_revoke_and_introspect_share_the_token_rate_limit(
    settings: Settings, clock: FakeClock
) -> None:
    limits = {"token_rate_limit_per_second": 0.001, "token_rate_limit_burst": 3}
    for route in ("/oauth2/revoke", "/oauth2/introspect"):
        async with _service_with(settings, clock, **limits) as (http, opened):
            issued = await opened.service.bootstrap("acme", "alice", 30, clock())
            bearer = {"authorization": f"Bearer {issued.access_token.value}"}
            answers = [
                await http.post(route, data={"token": "apit_rt_" + "x" * 43}, headers=bearer)
                for _ in range(4)
            ]
            assert [a.status_code for a in answers] == [200, 200, 200, 429], route
            assert answers[3].json()["error"] == "temporarily_unavailable"
            assert int(answers[3].headers["retry-after"]) >= 1


async def test_an_unknown_refresh_token_uses_only_prebuilt_fast_path_statements(
    admin: ApiSession, service: TokenService
) -> None:
    executed: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        executed.append(statement)

    engine = service.storage.engine.sync_engine  # type: ignore[attr-defined]
    sqlalchemy.event.listen(engine, "before_cursor_execute", count)
    try:
        for route, field in (("/oauth2/token", "refresh_token"), ("/oauth2/revoke", "token")):
            unknown = "apit_rt_" + "u" * 43
            await admin.http.post(
                route, data={"grant_type": "refresh_token", field: unknown}, headers=admin.headers
            )
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", count)
    assert executed == []  # the general engine path (a fresh 100-item IN per call) is not used


# -- also decided: implausible times are refused; SQLite files are 0600 ----------------------


async def test_tokens_with_implausible_times_are_refused(
    admin: ApiSession, service: TokenService, clock: FakeClock
) -> None:
    now = int(clock().timestamp())
    base = _claims(admin)
    for changes in (
        {"exp": now + 400 * 365 * 86_400},  # centuries away
        {"iat": now + 3600, "exp": now + 7200},  # issued in the future
        {"nbf": now + 3600},  # not yet valid
    ):
        token = service.keys.current.sign({**base, **changes})
        response = await admin.http.get(
            admin.path("/tokens"), headers={"authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, changes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_database_file_is_private(settings: Settings, runtime: object) -> None:
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- 10: after PostgreSQL drops every connection, readiness and refreshes recover -----------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_after_every_connection_is_dropped_readyz_and_refresh_work(
    admin: ApiSession, database_url: str
) -> None:
    import asyncio

    import asyncpg  # type: ignore[import-untyped]

    assert (await admin.refresh(admin.refresh_token)).status_code == 200  # pools are warm
    killer = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    await asyncio.sleep(0.5)
    ready = await admin.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    listed = await admin.http.get(admin.path("/tokens"), headers=admin.headers)
    assert listed.status_code == 200
    created = await admin.create_token("after", 1)
    assert (await admin.refresh(created["refreshToken"])).status_code == 200
