"""POST /oauth2/token with rotation, revoke, introspect, discovery, JWKS and key rotation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from apitoken_service.api.app import create_app
from apitoken_service.api.deps import Runtime
from apitoken_service.domain.service import REPLAY_DETECTION_ROTATIONS, TokenService
from apitoken_service.settings import Settings
from apitoken_service.signing import KeyRing
from support.tokenservice import ApiSession

from .conftest import BASE_URL, FakeClock, bootstrap

pytestmark = pytest.mark.service


def verify_with_jwks(token: str, jwks: dict[str, Any], now: float) -> dict[str, Any]:
    """Verify like a resource server would: pick the key by `kid` from the served JWKS."""
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token,
        keys[kid],
        algorithms=["EdDSA"],
        audience="apitoken-api",
        issuer=BASE_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["exp"] > now
    return claims


async def test_refresh_rotates_and_keeps_the_final_expiry(
    admin: ApiSession, clock: FakeClock
) -> None:
    token = await admin.create_token("rotating", 30)
    clock.advance(60)

    response = await admin.refresh(token["refreshToken"], client_id="anything")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["refresh_token"].startswith("apit_rt_")
    assert body["refresh_token"] != token["refreshToken"]
    assert body["refresh_token_expires_in"] == 30 * 86_400 - 60
    jwks = (await admin.http.get("/.well-known/jwks.json")).json()
    claims = verify_with_jwks(body["access_token"], jwks, clock().timestamp())
    assert claims["sub"] == "alice" and claims["ws"] == "acme" and claims["tid"] == token["id"]
    assert set(claims) == {"iss", "sub", "aud", "ws", "tid", "jti", "iat", "exp"}
    assert jwt.get_unverified_header(body["access_token"])["kid"] == jwks["keys"][0]["kid"]
    # The new refresh token works and rotates again; metadata records the use.
    second = await admin.refresh(body["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != body["refresh_token"]
    got = await admin.http.get(admin.path(f"/tokens/{token['id']}"), headers=admin.headers)
    assert got.json()["lastUsedAt"] == "2026-01-05T12:01:00Z"
    assert got.json()["expiresAt"] == token["expiresAt"]


async def test_retry_within_grace_returns_the_same_new_refresh_token(
    admin: ApiSession, clock: FakeClock
) -> None:
    token = await admin.create_token()
    first = (await admin.refresh(token["refreshToken"])).json()
    clock.advance(29)

    retry = await admin.refresh(token["refreshToken"])

    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == first["refresh_token"]
    assert retry.json()["access_token"] != first["access_token"]  # a new jti
    # Both answers lead on: the successor is the current refresh token.
    assert (await admin.refresh(first["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_of_one_token_agree(admin: ApiSession) -> None:
    token = await admin.create_token()
    responses = await asyncio.gather(*(admin.refresh(token["refreshToken"]) for _ in range(5)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["refresh_token"] for r in responses}) == 1


def replays_counted(runtime: Runtime) -> float | None:
    return runtime.metrics.registry.get_sample_value("apitoken_service_refresh_replays_total")


async def test_replay_after_grace_disables_the_whole_token(
    admin: ApiSession, clock: FakeClock, runtime: Runtime
) -> None:
    token = await admin.create_token()
    rotated = (await admin.refresh(token["refreshToken"])).json()["refresh_token"]
    clock.advance(31)

    replay = await admin.refresh(token["refreshToken"])

    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert replays_counted(runtime) == 1
    # The legitimate holder's current token is dead too: the whole token is disabled.
    assert (await admin.refresh(rotated)).json()["error"] == "invalid_grant"
    await admin.renew()
    got = await admin.http.get(admin.path(f"/tokens/{token['id']}"), headers=admin.headers)
    assert got.json()["status"] == "disabled"


async def test_replay_of_an_older_refresh_token_disables_the_whole_token(
    admin: ApiSession, runtime: Runtime
) -> None:
    token = await admin.create_token()
    chain = [token["refreshToken"]]
    for _ in range(3):
        chain.append((await admin.refresh(chain[-1])).json()["refresh_token"])

    # Two rotations back, well within the grace period of its own rotation: still a replay.
    replay = await admin.refresh(chain[1])

    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert replays_counted(runtime) == 1
    assert (await admin.refresh(chain[-1])).json()["error"] == "invalid_grant"
    await admin.renew()
    got = await admin.http.get(admin.path(f"/tokens/{token['id']}"), headers=admin.headers)
    assert got.json()["status"] == "disabled"
    # Replaying again (or another old token) counts no second replay: the token is disabled.
    assert (await admin.refresh(chain[0])).json()["error"] == "invalid_grant"
    assert replays_counted(runtime) == 1


async def test_a_refresh_token_beyond_the_replay_window_is_unknown(
    admin: ApiSession, runtime: Runtime
) -> None:
    token = await admin.create_token()
    current = token["refreshToken"]
    for _ in range(REPLAY_DETECTION_ROTATIONS + 1):
        current = (await admin.refresh(current)).json()["refresh_token"]

    ancient = await admin.refresh(token["refreshToken"])

    assert ancient.json()["error"] == "invalid_grant"
    assert replays_counted(runtime) == 0
    assert (await admin.refresh(current)).status_code == 200


async def test_revoking_with_an_earlier_refresh_token_disables_the_token(
    admin: ApiSession,
) -> None:
    token = await admin.create_token()
    first = (await admin.refresh(token["refreshToken"])).json()["refresh_token"]
    current = (await admin.refresh(first)).json()["refresh_token"]

    revoked = await admin.http.post("/oauth2/revoke", data={"token": token["refreshToken"]})

    assert revoked.status_code == 200
    assert (await admin.refresh(current)).json()["error"] == "invalid_grant"


async def test_access_token_issued_before_disable_still_verifies(
    admin: ApiSession, clock: FakeClock
) -> None:
    token = await admin.create_token()
    issued = (await admin.refresh(token["refreshToken"])).json()
    await admin.http.post(admin.path(f"/tokens/{token['id']}/disable"), headers=admin.headers)
    clock.advance(120)

    assert (await admin.refresh(issued["refresh_token"])).json()["error"] == "invalid_grant"
    jwks = (await admin.http.get("/.well-known/jwks.json")).json()
    claims = verify_with_jwks(issued["access_token"], jwks, clock().timestamp())
    assert claims["tid"] == token["id"]
    # ... until it expires.
    clock.advance(300)
    with pytest.raises(AssertionError):
        verify_with_jwks(issued["access_token"], jwks, clock().timestamp())


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "password", "username": "a", "password": "b"},
            400,
            "unsupported_grant_type",
        ),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({"refresh_token": "apit_rt_x"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "garbage"}, 400, "invalid_grant"),
        (
            {"grant_type": "refresh_token", "refresh_token": "apit_rt_" + "A" * 43},
            400,
            "invalid_grant",
        ),
    ],
    ids=[
        "password",
        "client-credentials",
        "no-grant-type",
        "no-refresh-token",
        "garbage",
        "unknown",
    ],
)
async def test_token_endpoint_errors_follow_rfc6749(
    admin: ApiSession, form: dict[str, str], status: int, error: str
) -> None:
    response = await admin.http.post("/oauth2/token", data=form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_token_endpoint_wants_a_form(admin: ApiSession) -> None:
    as_json = await admin.http.post(
        "/oauth2/token", json={"grant_type": "refresh_token", "refresh_token": admin.refresh_token}
    )
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = await admin.http.post(
        "/oauth2/token",
        content=f"grant_type=refresh_token&refresh_token={admin.refresh_token}&grant_type=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json()["error"] == "invalid_request"
    assert admin.refresh_token not in repeated.text


async def test_workspace_isolation(
    admin: ApiSession, service: TokenService, clock: FakeClock
) -> None:
    other = await bootstrap(admin.http, service, clock, "globex", "zed")
    theirs = await other.create_token("globex's")
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/tokens", None),
        ("POST", "/tokens", {"name": "x", "lifetimeDays": 1}),
        ("GET", f"/tokens/{theirs['id']}", None),
        ("POST", f"/tokens/{theirs['id']}/disable", None),
        ("DELETE", f"/tokens/{theirs['id']}", None),
        ("POST", "/tokens/bulk", {"action": "delete", "ids": [theirs["id"]]}),
        ("GET", "/members", None),
        ("POST", "/members", {"user": "mallory", "role": "admin"}),
        ("DELETE", "/members/zed", None),
    ]
    for method, suffix, body in calls:
        response = await admin.http.request(
            method, other.path(suffix), json=body, headers=admin.headers
        )
        assert response.status_code == 401, (method, suffix)
    intro = await admin.http.post(
        "/oauth2/introspect", data={"token": theirs["refreshToken"]}, headers=admin.headers
    )
    assert intro.json() == {"active": False}
    still = await other.http.get(other.path(f"/tokens/{theirs['id']}"), headers=other.headers)
    assert still.json()["status"] == "active"


async def test_revoke_disables_the_token(admin: ApiSession) -> None:
    token = await admin.create_token()
    response = await admin.http.post(
        "/oauth2/revoke", data={"token": token["refreshToken"], "token_type_hint": "refresh_token"}
    )
    assert response.status_code == 200
    assert (await admin.refresh(token["refreshToken"])).json()["error"] == "invalid_grant"
    got = await admin.http.get(admin.path(f"/tokens/{token['id']}"), headers=admin.headers)
    assert got.json()["status"] == "disabled"
    # Unknown tokens and access tokens: 200, nothing to do (RFC 7009 section 2.2).
    for value in ("apit_rt_unknown" + "x" * 40, token["accessToken"]):
        assert (await admin.http.post("/oauth2/revoke", data={"token": value})).status_code == 200
    missing = await admin.http.post("/oauth2/revoke", data={})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


async def test_introspect(admin: ApiSession, clock: FakeClock) -> None:
    token = await admin.create_token()

    refresh = await admin.http.post(
        "/oauth2/introspect", data={"token": token["refreshToken"]}, headers=admin.headers
    )
    access = await admin.http.post(
        "/oauth2/introspect", data={"token": token["accessToken"]}, headers=admin.headers
    )
    garbage = await admin.http.post(
        "/oauth2/introspect", data={"token": "x"}, headers=admin.headers
    )
    anonymous = await admin.http.post("/oauth2/introspect", data={"token": token["accessToken"]})

    assert refresh.json()["active"] is True and refresh.json()["tid"] == token["id"]
    assert access.json()["active"] is True and access.json()["sub"] == "alice"
    assert access.json()["exp"] == int(clock().timestamp()) + 300
    assert garbage.json() == {"active": False}
    assert anonymous.status_code == 401
    await admin.http.post(admin.path(f"/tokens/{token['id']}/disable"), headers=admin.headers)
    after = await admin.http.post(
        "/oauth2/introspect", data={"token": token["refreshToken"]}, headers=admin.headers
    )
    assert after.json() == {"active": False}


async def test_discovery_metadata(admin: ApiSession) -> None:
    meta = (await admin.http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == BASE_URL
    assert meta["token_endpoint"] == f"{BASE_URL}/oauth2/token"
    assert meta["jwks_uri"] == f"{BASE_URL}/.well-known/jwks.json"
    assert meta["revocation_endpoint"] == f"{BASE_URL}/oauth2/revoke"
    assert meta["introspection_endpoint"] == f"{BASE_URL}/oauth2/introspect"
    assert meta["grant_types_supported"] == ["refresh_token"]


async def test_key_rotation_keeps_old_keys_until_their_tokens_expired(
    admin: ApiSession, runtime: Runtime, clock: FakeClock
) -> None:
    before = (await admin.refresh(admin.refresh_token)).json()
    new_kid = await runtime.require_opened().rotate_signing_key(clock)

    after = (await admin.refresh(before["refresh_token"])).json()
    jwks = (await admin.http.get("/.well-known/jwks.json")).json()

    assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid
    assert len(jwks["keys"]) == 2
    verify_with_jwks(before["access_token"], jwks, clock().timestamp())
    verify_with_jwks(after["access_token"], jwks, clock().timestamp())
    clock.advance(300 + 61)
    later = (await admin.http.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in later["keys"]] == [new_kid]


async def test_without_rotation_the_refresh_token_stays(
    settings: Settings, clock: FakeClock
) -> None:
    app = create_app(settings.model_copy(update={"rotate_refresh_tokens": False}), clock=clock)
    async with app.router.lifespan_context(app):
        service = app.state.runtime.require_service()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            session = await bootstrap(client, service, clock, "acme", "alice")
            first = await session.refresh(session.refresh_token)
            clock.advance(3600)
            second = await session.refresh(session.refresh_token)
    assert first.status_code == second.status_code == 200
    assert first.json()["refresh_token"] == second.json()["refresh_token"] == session.refresh_token


def test_access_tokens_are_the_jws_pyjwt_would_make() -> None:
    # The service assembles the JWS itself (the hot path); Ed25519 is deterministic, so the
    # very same bytes as pyjwt's jwt.encode show header, payload and signature are standard.
    key = Ed25519PrivateKey.generate()
    ring = KeyRing("kid-1", key, [])
    claims: dict[str, Any] = {"iss": "i", "sub": "alice", "aud": "a", "ws": "w", "exp": 9}

    assert ring.sign(claims) == jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "kid-1"})
