"""Provider `apitoken`: the management API of this project's token service, one workspace's
/api/v1/workspaces/{workspace}/tokens (generate, disable, delete, list by externalRef)."""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from apitoken_operator.providers.answers import (
    CreatedToken,
    TokenMetadata,
    TokenValues,
    parse_rfc3339,
)
from apitoken_operator.providers.errors import ServerError, redact
from apitoken_operator.providers.http import json_body, raise_status, send

# Returns a Bearer access token of the workspace (the operator's own credential).
BearerSource = Callable[[], Awaitable[str]]


def _raise_for_management(response: httpx.Response, secrets: tuple[str, ...]) -> None:
    if response.is_success:
        return
    body = json_body(response)
    detail = ""
    if isinstance(body, Mapping):
        detail = str(body.get("detail") or body.get("title") or "")
    detail = redact(detail, secrets)[:500]
    request = response.request
    message = f"{request.method} {request.url.path}: {response.status_code}" + (
        f" {detail}" if detail else ""
    )
    raise_status(response, message)


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
        response = await send(self._http, request, (bearer,))
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
        data = json_body(response)
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
            data = json_body(await self._call("GET", self._tokens, params=params))
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
            return _metadata(json_body(response))
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(what, exc) from None
