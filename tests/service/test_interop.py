"""Third-party clients: Authlib's OAuth 2.0 client refreshes, joserfc verifies via the JWKS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet

from support.tokenservice import ApiSession

from .conftest import BASE_URL, FakeClock

pytestmark = pytest.mark.service


@pytest.fixture
def clock() -> FakeClock:
    """Wall-clock time: these libraries check expiry against the real clock."""
    fake = FakeClock()
    fake.now = datetime.now(UTC)
    return fake


async def test_authlib_client_refreshes_with_rotation(app: FastAPI, admin: ApiSession) -> None:
    token = await admin.create_token("authlib", 7)
    saved: list[dict[str, Any]] = []
    replaced: list[str | None] = []

    async def update_token(new: dict[str, Any], refresh_token: str | None = None, **_: Any) -> None:
        replaced.append(refresh_token)
        saved.append(new)

    client = AsyncOAuth2Client(
        client_id="operator",
        token_endpoint=f"{BASE_URL}/oauth2/token",
        token_endpoint_auth_method="none",
        token={
            "access_token": token["accessToken"],
            "refresh_token": token["refreshToken"],
            "token_type": "Bearer",
            "expires_at": 1,  # long expired: the client must refresh before calling
        },
        update_token=update_token,
        # Authlib's client is built on httpx2, so it takes httpx2's ASGI transport.
        transport=httpx2.ASGITransport(app=app),
        base_url=BASE_URL,
    )
    async with client:
        listed = await client.get(admin.path("/tokens"))
        assert listed.status_code == 200
        assert len(saved) == 1 and saved[0]["refresh_token"] != token["refreshToken"]
        explicit = await client.refresh_token(
            f"{BASE_URL}/oauth2/token", refresh_token=saved[0]["refresh_token"]
        )
    assert explicit["refresh_token"] not in (token["refreshToken"], saved[0]["refresh_token"])
    assert explicit["expires_in"] == 300
    # Each rotation replaced the refresh token the client held.
    assert replaced == [token["refreshToken"], saved[0]["refresh_token"]]


# RFC 9864 deprecates the name EdDSA; the service keeps it for pyjwt (docs/token-service.md).
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
async def test_joserfc_verifies_access_tokens_against_the_served_jwks(admin: ApiSession) -> None:
    token = await admin.create_token("jose", 7)
    refreshed = (await admin.refresh(token["refreshToken"])).json()
    keyset = KeySet.import_key_set((await admin.http.get("/.well-known/jwks.json")).json())

    for value in (token["accessToken"], refreshed["access_token"]):
        decoded = jwt.decode(value, keyset, algorithms=["EdDSA"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": BASE_URL},
            aud={"essential": True, "value": "apitoken-api"},
            sub={"essential": True, "value": "alice"},
            exp={"essential": True},
            ws={"essential": True, "value": "acme"},
            tid={"essential": True, "value": token["id"]},
        ).validate(decoded.claims)
        assert decoded.header["kid"] == keyset.keys[0].kid

    tampered = refreshed["access_token"][:-4] + (
        "AAAA" if not refreshed["access_token"].endswith("AAAA") else "BBBB"
    )
    with pytest.raises(Exception, match=r"(?i)signature"):
        jwt.decode(tampered, keyset, algorithms=["EdDSA"])
