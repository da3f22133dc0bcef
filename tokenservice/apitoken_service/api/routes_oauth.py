"""OAuth 2.0 endpoints: token (RFC 6749 refresh grant), revoke (RFC 7009), introspect (RFC 7662).

The token endpoint is the hot path: it parses its form itself (no per-request dependency tree),
does one read and one conditional write, and signs with a key loaded at start-up.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from apitoken_service.api.deps import NowDep, Runtime, ServiceDep
from apitoken_service.api.schemas import OAuthErrorBody, TokenResponse
from apitoken_service.domain.errors import (
    InvalidRequest,
    OAuthError,
    Unauthenticated,
    UnsupportedGrantType,
)

router = APIRouter(tags=["oauth2"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"


def _form_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                _FORM: {
                    "schema": {"type": "object", "required": required, "properties": properties}
                }
            },
        }
    }


_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorBody, "description": "RFC 6749 section 5.2 error"},
    429: {"model": OAuthErrorBody, "description": "Rate limited; see Retry-After"},
}


def oauth_error(exc: OAuthError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers={**NO_STORE, **(headers or {})},
    )


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise InvalidRequest(f"the body must be {_FORM}")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not a valid form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise InvalidRequest(f"parameter {key!r} is repeated")
        form[key] = value
    return form


TOKEN_PATH = "/oauth2/token"
# Where a handler outside the router names its route template for metrics and logs.
ROUTE_SCOPE_KEY = "apitoken.route"


@router.post(
    TOKEN_PATH,
    summary="Token endpoint: the refresh_token grant with rotation",
    response_model=TokenResponse,
    responses=_OAUTH_ERRORS,
    openapi_extra=_form_body(
        ["grant_type", "refresh_token"],
        {
            "grant_type": {"type": "string", "enum": ["refresh_token"]},
            "refresh_token": {"type": "string"},
            "client_id": {"type": "string"},
        },
    ),
)
async def token(request: Request) -> Response:
    # Normally answered by TokenEndpointFastPath before routing; this route documents it in
    # the OpenAPI and serves any stack without that middleware.
    runtime: Runtime = request.app.state.runtime
    return await token_endpoint(request, runtime)


async def token_endpoint(request: Request, runtime: Runtime) -> Response:
    """The refresh grant. No FastAPI dependencies here: this is the hot path."""
    wait = runtime.rate_limiter.acquire(
        request.client.host if request.client else "", time.monotonic()
    )
    if wait > 0:
        return oauth_error(
            _RateLimited("too many token requests from this client; retry later"),
            {"Retry-After": runtime.rate_limiter.retry_after_header(wait)},
        )
    service = runtime.require_service()
    try:
        form = await read_form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type != "refresh_token":
            raise UnsupportedGrantType("only the refresh_token grant is supported")
        presented = form.get("refresh_token")
        if not presented:
            raise InvalidRequest("refresh_token is required")
        now = runtime.clock()
        result = await service.refresh(presented, now)
    except OAuthError as exc:
        return oauth_error(exc)
    body = {
        "access_token": result.access_token.value,
        "token_type": "Bearer",
        "expires_in": result.access_token.expires_in,
        "refresh_token": result.refresh_token,
        "refresh_token_expires_in": max(
            0, (result.refresh_token_expires_at_ms - int(now.timestamp() * 1000)) // 1000
        ),
    }
    return JSONResponse(body, headers=NO_STORE)


class _RateLimited(OAuthError):
    error = "temporarily_unavailable"
    status = 429


@router.post(
    "/oauth2/revoke",
    summary="Revoke a refresh token (RFC 7009); disables the whole API token",
    responses={200: {"description": "Revoked, or not a token of this service"}, **_OAUTH_ERRORS},
    openapi_extra=_form_body(
        ["token"],
        {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string"},
            "client_id": {"type": "string"},
        },
    ),
)
async def revoke(request: Request, service: ServiceDep, now: NowDep) -> Response:
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
    return Response(status_code=200, headers=NO_STORE)


_bearer = HTTPBearer(auto_error=False)


@router.post(
    "/oauth2/introspect",
    summary="Introspect a token of the caller's workspace (RFC 7662)",
    responses={401: {"model": OAuthErrorBody}, **_OAUTH_ERRORS},
    openapi_extra=_form_body(
        ["token"], {"token": {"type": "string"}, "token_type_hint": {"type": "string"}}
    ),
)
async def introspect(
    request: Request,
    service: ServiceDep,
    now: NowDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Response:
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


class TokenEndpointFastPath:
    """Answers `POST /oauth2/token` before FastAPI's router and dependency solver, which cost
    more per request than the grant itself (profiled: routing alone was the largest item)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            scope[ROUTE_SCOPE_KEY] = TOKEN_PATH
            response = await token_endpoint(Request(scope, receive), self.runtime)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
