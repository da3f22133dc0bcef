"""OAuth 2.0 endpoints: token (RFC 6749 refresh grant), revoke (RFC 7009), introspect (RFC 7662).

The token endpoint is the hot path and is answered before routing (api/token_endpoint.py); its
route here describes it in the OpenAPI.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse, Response

from apitoken_service.api.deps import NowDep, Runtime, RuntimeDep, ServiceDep
from apitoken_service.api.oauth_form import FORM_MEDIA_TYPE, parse_form
from apitoken_service.api.schemas import OAuthErrorBody, TokenResponse
from apitoken_service.domain.errors import (
    InvalidRequest,
    OAuthError,
    Unauthenticated,
)

router = APIRouter(tags=["oauth2"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _form_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                FORM_MEDIA_TYPE: {
                    "schema": {"type": "object", "required": required, "properties": properties}
                }
            },
        }
    }


_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorBody, "description": "RFC 6749 section 5.2 error"},
    429: {"model": OAuthErrorBody, "description": "Rate limited; see Retry-After"},
}


class RateLimited(OAuthError):
    error = "temporarily_unavailable"
    status = 429


def rate_limited(request: Request, runtime: Runtime) -> JSONResponse | None:
    """The token endpoint's per-client limit, shared by revocation and introspection: an
    unknown token costs a chain walk (domain/service.py), so none of the three is free."""
    client = request.client
    wait = runtime.rate_limiter.acquire(client.host if client else "", time.monotonic())
    if wait <= 0:
        return None
    return oauth_error(
        RateLimited("too many token requests from this client; retry later"),
        {"Retry-After": runtime.rate_limiter.retry_after_header(wait)},
    )


def oauth_error(exc: OAuthError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers={**NO_STORE, **(headers or {})},
    )


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").encode("latin-1")
    return parse_form(content_type, await request.body())


TOKEN_PATH = "/oauth2/token"


@router.post(
    TOKEN_PATH,
    summary="Token endpoint: the refresh_token grant with rotation",
    response_model=TokenResponse,
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_body(
        ["grant_type", "refresh_token"],
        {
            "grant_type": {"type": "string", "enum": ["refresh_token"]},
            "refresh_token": {"type": "string", "minLength": 1},
            "client_id": {"type": "string"},
        },
    ),
)
async def token() -> Response:
    # Documents the endpoint in the OpenAPI only: TokenServiceApp answers POST /oauth2/token
    # before routing (api/token_endpoint.py), so this handler never runs.
    raise RuntimeError("POST /oauth2/token is answered before routing")


@router.post(
    "/oauth2/revoke",
    summary="Revoke a refresh token (RFC 7009); disables the whole API token",
    responses={200: {"description": "Revoked, or not a token of this service"}, **_OAUTH_ERRORS},
    openapi_extra=_form_body(
        ["token"],
        {
            "token": {"type": "string", "minLength": 1},
            "token_type_hint": {"type": "string"},
            "client_id": {"type": "string"},
        },
    ),
)
async def revoke(
    request: Request, runtime: RuntimeDep, service: ServiceDep, now: NowDep
) -> Response:
    if (limited := rate_limited(request, runtime)) is not None:
        return limited
    try:
        form = await read_form(request)
        presented = form.get("token")
        if not presented:
            raise InvalidRequest("token is required")
    except OAuthError as exc:
        return oauth_error(exc)
    # Access tokens are self-contained JWTs that live their short life; RFC 7009 allows
    # answering 200 for tokens the server does not revoke.
    await service.revoke_refresh_token(presented, now)
    # An empty JSON object: RFC 7009 leaves the body open, the schema documents JSON.
    return JSONResponse({}, headers=NO_STORE)


_bearer = HTTPBearer(auto_error=False)


@router.post(
    "/oauth2/introspect",
    summary="Introspect a token of the caller's workspace (RFC 7662)",
    responses={401: {"model": OAuthErrorBody}, **_OAUTH_ERRORS},
    openapi_extra=_form_body(
        ["token"],
        {"token": {"type": "string", "minLength": 1}, "token_type_hint": {"type": "string"}},
    ),
)
async def introspect(
    request: Request,
    runtime: RuntimeDep,
    service: ServiceDep,
    now: NowDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
    if (limited := rate_limited(request, runtime)) is not None:
        return limited
    try:
        caller = await service.authenticate_bearer(
            None if credentials is None else credentials.credentials, now
        )
    except Unauthenticated as exc:
        return JSONResponse(
            {"error": "invalid_token", "error_description": exc.detail},
            status_code=401,
            headers={**NO_STORE, "WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    try:
        form = await read_form(request)
        presented = form.get("token")
        if not presented:
            raise InvalidRequest("token is required")
    except OAuthError as exc:
        return oauth_error(exc)
    return JSONResponse(await service.introspect(caller, presented, now), headers=NO_STORE)
