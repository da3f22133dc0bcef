"""The refresh_token grant at an RFC 6749 token endpoint: every provider has one (the token
service's own for provider `apitoken`, the identity provider's in refresh-only mode, `oauth2`)."""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NoReturn

import httpx

from apitoken_operator.providers.answers import RefreshResult, TokenValues
from apitoken_operator.providers.errors import (
    BadRequest,
    InvalidGrant,
    ServerError,
    Unauthorized,
    redact,
)
from apitoken_operator.providers.http import Clock, json_body, raise_status, send, utc_now


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
        response = await send(self._http, request, (refresh_token,))
        body = json_body(response)
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
        raise_status(response, message)
