"""Discovery (RFC 8414) and the JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from apitoken_service.api.deps import NowDep, ServiceDep

router = APIRouter(tags=["discovery"])


@router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(service: ServiceDep, now: NowDep) -> JSONResponse:
    # Short caching: a rotated key must reach verifiers well before its first tokens do harm.
    return JSONResponse(
        service.keys.current.jwks(now), headers={"Cache-Control": "public, max-age=60"}
    )


@router.get("/.well-known/oauth-authorization-server", summary="RFC 8414 metadata")
async def metadata(service: ServiceDep) -> dict[str, Any]:
    issuer = service.policy.issuer
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "grant_types_supported": ["refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    }
