"""Async clients for the token service's management API and for RFC 6749 token endpoints.

The httpx.AsyncClient is injected (its timeouts, TLS trust and transport are the caller's), so
tests drive these with httpx.MockTransport. Every failure becomes one of the exceptions in
`service_errors`; no message, repr or exception chain carries a token value.
"""

import base64
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from apitoken_operator.providers.answers import (
    CreatedToken,
    RefreshResult,
    TokenMetadata,
    TokenValues,
    parse_rfc3339,
)
from apitoken_operator.providers.errors import (
    BadRequest,
    InvalidGrant,
    NotFound,
    ServerError,
    ServiceError,
    Timeout,
    Unauthorized,
    Unreachable,
    redact,
)

Clock = Callable[[], datetime]
# Returns a Bearer access token of the workspace (the operator's own credential).
BearerSource = Callable[[], Awaitable[str]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def ssl_context(ca_bundle_b64: str | None) -> ssl.SSLContext | bool:
    """TLS verification for a workspace: its caBundle (base64 PEM) or the system store."""
    if not ca_bundle_b64:
        return True
    return ssl.create_default_context(cadata=base64.b64decode(ca_bundle_b64).decode())


async def _send(
    http: httpx.AsyncClient, request: httpx.Request, secrets: tuple[str, ...]
) -> httpx.Response:
    what = f"{request.method} {request.url.copy_with(query=None)}"
    try:
        return await http.send(request)
    except httpx.TimeoutException as exc:
        raise Timeout(f"{what}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        detail = redact(str(exc), secrets)[:200]
        raise Unreachable(f"{what}: {type(exc).__name__}: {detail}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raise_for_management(response: httpx.Response, secrets: tuple[str, ...]) -> None:
    if response.is_success:
        return
    body = _json(response)
    detail = ""
    if isinstance(body, Mapping):
        detail = str(body.get("detail") or body.get("title") or "")
    detail = redact(detail, secrets)[:500]
    request = response.request
    message = f"{request.method} {request.url.path}: {response.status_code}" + (
        f" {detail}" if detail else ""
    )
    _raise_status(response, message)


def _raise_status(response: httpx.Response, message: str) -> NoReturn:
    status = response.status_code
    if status == 429 or status >= 500:
        raise ServerError(message, status=status, retry_after=_retry_after(response))
    if status in (401, 403):
        raise Unauthorized(message, status=status)
    if status in (404, 410):
        raise NotFound(message, status=status)
    if status >= 400:
        raise BadRequest(message, status=status)
    raise ServiceError(message, status=status)


def _metadata(body: Mapping[str, Any]) -> TokenMetadata:
    return TokenMetadata(
        id=str(body["id"]),
        name=str(body["name"]),
        status=str(body["status"]),
        expires_at=parse_rfc3339(str(body["expiresAt"])),
        external_ref=body.get("externalRef"),
        owner=body.get("owner"),
    )


def _malformed(what: str, exc: Exception) -> ServerError:
    # Name the missing field, never the body: it may hold token values.
    return ServerError(f"{what}: malformed response ({type(exc).__name__}: {exc.args[:1]})")


class TokenServiceClient:
    """The management API of one workspace: /api/v1/workspaces/{workspace}/tokens."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        workspace: str,
        bearer: BearerSource,
        page_size: int = 100,
    ) -> None:
        self._http = http
        self._tokens = (
            f"{base_url.rstrip('/')}/api/v1/workspaces/{quote(workspace, safe='')}/tokens"
        )
        self._bearer = bearer
        self._page_size = page_size

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        bearer = await self._bearer()
        request = self._http.build_request(
            method,
            url,
            json=json,
            params=params,
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
        )
        response = await _send(self._http, request, (bearer,))
        _raise_for_management(response, (bearer,))
        return response

    def _token_url(self, token_id: str) -> str:
        return f"{self._tokens}/{quote(token_id, safe='')}"

    async def create_token(
        self, *, name: str, lifetime_days: int, external_ref: str | None
    ) -> CreatedToken:
        body: dict[str, Any] = {"name": name, "lifetimeDays": lifetime_days}
        if external_ref is not None:
            body["externalRef"] = external_ref
        response = await self._call("POST", self._tokens, json=body)
        data = _json(response)
        try:
            return CreatedToken(
                metadata=_metadata(data),
                values=TokenValues(
                    access_token=str(data["accessToken"]),
                    refresh_token=str(data["refreshToken"]),
                    token_type="Bearer",
                    access_token_expires_at=parse_rfc3339(str(data["accessTokenExpiresAt"])),
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed("create token", exc) from None

    async def get_token(self, token_id: str) -> TokenMetadata:
        response = await self._call("GET", self._token_url(token_id))
        return self._parse_metadata("get token", response)

    async def disable_token(self, token_id: str) -> TokenMetadata:
        """Disabling is irreversible and idempotent at the service."""
        response = await self._call("POST", self._token_url(token_id) + "/disable")
        return self._parse_metadata("disable token", response)

    async def delete_token(self, token_id: str) -> None:
        await self._call("DELETE", self._token_url(token_id))

    async def list_tokens(
        self, *, external_ref: str, owner: str | None = None
    ) -> list[TokenMetadata]:
        """Every token tagged with `external_ref`: the caller's own by default (the operator
        made them), or a member's or everyone's ("*", admins only)."""
        found: list[TokenMetadata] = []
        cursor: str | None = None
        while True:
            params = {"externalRef": external_ref, "limit": str(self._page_size)}
            if owner is not None:
                params["owner"] = owner
            if cursor is not None:
                params["cursor"] = cursor
            data = _json(await self._call("GET", self._tokens, params=params))
            try:
                found.extend(_metadata(item) for item in data["items"])
                cursor = data.get("next")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise _malformed("list tokens", exc) from None
            if not cursor:
                return found

    @staticmethod
    def _parse_metadata(what: str, response: httpx.Response) -> TokenMetadata:
        try:
            return _metadata(_json(response))
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(what, exc) from None


class TokenEndpointClient:
    """The refresh_token grant at any RFC 6749 token endpoint (the service's, or a provider's
    in refresh-only mode)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_endpoint: str,
        client_id: str | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._http = http
        self._endpoint = token_endpoint
        self._client_id = client_id
        self._clock = clock

    async def refresh(self, refresh_token: str) -> RefreshResult:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self._client_id:
            form["client_id"] = self._client_id
        request = self._http.build_request(
            "POST", self._endpoint, data=form, headers={"Accept": "application/json"}
        )
        # Expiry counts from before the request: never later than the server's own clock says.
        started = self._clock()
        response = await _send(self._http, request, (refresh_token,))
        body = _json(response)
        if not response.is_success:
            self._raise_oauth_error(response, body, refresh_token)
        secrets: tuple[str, ...] = (refresh_token,)
        try:
            access = str(body["access_token"])
            secrets = (refresh_token, access)
            expires_in = float(body["expires_in"])
            new_refresh = body.get("refresh_token")
            refresh_in = body.get("refresh_token_expires_in")
            token_type = str(body.get("token_type") or "Bearer")
        except (KeyError, TypeError, ValueError) as exc:
            # The exception text is only a key name or a conversion error of a number.
            raise ServerError(
                redact(f"token endpoint: malformed response ({type(exc).__name__})", secrets)
            ) from None
        return RefreshResult(
            values=TokenValues(
                access_token=access,
                refresh_token=str(new_refresh) if new_refresh else refresh_token,
                token_type=token_type,
                access_token_expires_at=started + timedelta(seconds=expires_in),
            ),
            refresh_token_expires_at=(
                started + timedelta(seconds=float(refresh_in)) if refresh_in is not None else None
            ),
            rotated=bool(new_refresh),
            obtained_at=started,
        )

    def _raise_oauth_error(
        self, response: httpx.Response, body: Any, refresh_token: str
    ) -> NoReturn:
        error = description = ""
        if isinstance(body, Mapping):
            error = str(body.get("error") or "")
            description = str(body.get("error_description") or "")
        text = redact(f"{error}: {description}" if description else error, (refresh_token,))
        message = f"token endpoint: {response.status_code} {text[:500]}".rstrip()
        if error == "invalid_grant":
            raise InvalidGrant(message, status=response.status_code)
        if error in ("invalid_client", "unauthorized_client"):
            raise Unauthorized(message, status=response.status_code)
        if error and response.status_code < 500 and response.status_code != 429:
            raise BadRequest(message, status=response.status_code)
        _raise_status(response, message)
