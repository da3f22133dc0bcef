"""The refresh_token grant at an RFC 6749 token endpoint: every provider has one (the token
service's own for provider `apitoken`, the identity provider's in refresh-only mode, `oauth2`),
and RFC 7009 revocation of a refresh token where the provider offers it.

Client authentication is `none` (a public client: client_id in the form, if any),
`client_secret_basic` (RFC 6749 section 2.3.1: HTTP Basic with the form-urlencoded id and
secret) or `client_secret_post` (both in the form). Endpoints not set are discovered from the
issuer (`providers.discovery`). No message, repr or exception built here carries a token value
or the client secret, nor a response body: a server may echo what it was sent.
"""

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import jwt

from apitoken_operator.crd.resources import DEFAULT_ACCESS_TOKEN_LIFETIME, ClientAuthMethod
from apitoken_operator.providers.answers import RefreshResult, TokenValues
from apitoken_operator.providers.discovery import Discovery, fetch_metadata
from apitoken_operator.providers.errors import (
    BadRequest,
    ClientRejected,
    ClientSecretMissing,
    InvalidGrant,
    ServerError,
    ServiceError,
    redact,
)
from apitoken_operator.providers.http import Clock, json_body, raise_status, send, utc_now


@dataclass(frozen=True)
class ClientAuth:
    """How the client authenticates; the secret never shows in a repr."""

    client_id: str | None = None
    method: ClientAuthMethod = ClientAuthMethod.NONE
    client_secret: str | None = field(default=None, repr=False)
    # Where the secret comes from, for the message when it is missing ("Secret x key y").
    secret_source: str = "clientSecretRef"


@dataclass(frozen=True)
class RequestShape:
    """What every refresh sends besides the grant, and how to read an answer without
    expires_in."""

    scope: str | None = None
    extra_params: Mapping[str, str] = field(default_factory=dict)
    default_lifetime: timedelta = DEFAULT_ACCESS_TOKEN_LIFETIME


def jwt_expiry(access_token: str) -> datetime | None:
    """The `exp` of an access token that is a JWT, read without verifying it (the operator only
    schedules the next refresh by it; the API the token is for does the verifying)."""
    if access_token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
        exp = claims.get("exp")
        return datetime.fromtimestamp(float(exp), UTC) if exp is not None else None
    except (jwt.PyJWTError, TypeError, ValueError, OverflowError):
        return None


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 section 2.3.1: each part form-urlencoded before Base64.
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


class TokenEndpointClient:
    """The refresh_token grant at any RFC 6749 token endpoint (the service's, or a provider's
    in refresh-only mode), and RFC 7009 revocation."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        token_endpoint: str | None,
        client_id: str | None = None,
        clock: Clock = utc_now,
        auth: ClientAuth | None = None,
        shape: RequestShape | None = None,
        issuer: str | None = None,
        revocation_endpoint: str | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self._http = http
        self._endpoint = token_endpoint
        self._revocation = revocation_endpoint
        self._issuer = issuer
        self._discovery = discovery
        self._auth = auth or ClientAuth(client_id=client_id)
        self._shape = shape or RequestShape()
        self._clock = clock

    # -- endpoints ---------------------------------------------------------------------------

    async def _metadata_endpoints(self) -> tuple[str | None, str | None]:
        if self._issuer is None:
            return None, None
        if self._discovery is not None:
            found = await self._discovery.metadata(self._http, self._issuer)
        else:
            found = await fetch_metadata(self._http, self._issuer)
        return found.token_endpoint, found.revocation_endpoint

    async def _token_url(self) -> str:
        if self._endpoint:
            return self._endpoint
        token, _ = await self._metadata_endpoints()
        if not token:
            raise BadRequest("the workspace has no token endpoint: set oauth2.tokenEndpoint")
        return token

    async def revocation_url(self) -> str | None:
        """The revocation endpoint: set, discovered from the issuer, or None."""
        if self._revocation:
            return self._revocation
        _, revocation = await self._metadata_endpoints()
        return revocation

    # -- requests ----------------------------------------------------------------------------

    def _secrets(self, *values: str | None) -> tuple[str, ...]:
        return tuple(v for v in (*values, self._auth.client_secret) if v)

    def _authenticated(self, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """The form and headers with the client's authentication added."""
        auth = self._auth
        headers = {"Accept": "application/json"}
        if auth.method is ClientAuthMethod.NONE:
            if auth.client_id:
                form["client_id"] = auth.client_id
            return form, headers
        if not auth.client_secret:
            raise ClientSecretMissing(
                f"clientAuthMethod {auth.method} needs a client secret: "
                f"{auth.secret_source} not found"
            )
        client_id = auth.client_id or ""
        if auth.method is ClientAuthMethod.CLIENT_SECRET_BASIC:
            headers["Authorization"] = _basic(client_id, auth.client_secret)
        else:
            form["client_id"] = client_id
            form["client_secret"] = auth.client_secret
        return form, headers

    async def _post(
        self, url: str, form: dict[str, str], secrets: tuple[str, ...]
    ) -> httpx.Response:
        form, headers = self._authenticated(form)
        request = self._http.build_request("POST", url, data=form, headers=headers)
        return await send(self._http, request, secrets)

    async def refresh(self, refresh_token: str) -> RefreshResult:
        url = await self._token_url()
        shape = self._shape
        form = dict(shape.extra_params)
        form.update(grant_type="refresh_token", refresh_token=refresh_token)
        if shape.scope:
            form["scope"] = shape.scope
        # Expiry counts from before the request: never later than the server's own clock says.
        started = self._clock()
        secrets = self._secrets(refresh_token)
        response = await self._post(url, form, secrets)
        body = json_body(response)
        if not response.is_success:
            self._raise_oauth_error(url, response, body, secrets)
        if not isinstance(body, Mapping):
            raise ServerError(
                f"token endpoint {url}: {response.status_code} with a body that is not JSON "
                f"({response.headers.get('content-type', 'no content type')})",
                status=response.status_code,
            )
        return self._result(url, body, refresh_token, started)

    def _result(
        self, url: str, body: Mapping[str, Any], refresh_token: str, started: datetime
    ) -> RefreshResult:
        try:
            access = body["access_token"]
            if not isinstance(access, str) or not access:
                raise TypeError("access_token")
            new_refresh = body.get("refresh_token")
            if new_refresh is not None and not isinstance(new_refresh, str):
                raise TypeError("refresh_token")
            expires_in = body.get("expires_in")
            refresh_in = body.get("refresh_token_expires_in")
            token_type = str(body.get("token_type") or "Bearer")
            if expires_in is not None:
                expires_at = started + timedelta(seconds=float(expires_in))
            else:
                # RFC 6749 5.1: expires_in is only RECOMMENDED.
                expires_at = jwt_expiry(access) or started + self._shape.default_lifetime
            refresh_expires_at = (
                started + timedelta(seconds=float(refresh_in)) if refresh_in is not None else None
            )
        except (KeyError, TypeError) as exc:
            # Name the field, never the body (it holds token values).
            field_name = str(exc.args[0]) if exc.args else "?"
            raise ServerError(
                f"token endpoint {url}: malformed answer (field {field_name[:40]} missing or "
                "of the wrong type)"
            ) from None
        except (ValueError, OverflowError) as exc:
            raise ServerError(
                f"token endpoint {url}: malformed answer (a lifetime that is not a number: "
                f"{type(exc).__name__})"
            ) from None
        return RefreshResult(
            values=TokenValues(
                access_token=access,
                # No refresh_token in the answer: the provider does not rotate; keep ours.
                refresh_token=new_refresh or refresh_token,
                token_type=token_type,
                access_token_expires_at=expires_at,
            ),
            refresh_token_expires_at=refresh_expires_at,
            rotated=bool(new_refresh) and new_refresh != refresh_token,
            obtained_at=started,
        )

    async def revoke(self, refresh_token: str) -> bool:
        """RFC 7009: revoke the refresh token (and, at most providers, the access tokens issued
        from it). False when there is no revocation endpoint to call."""
        url = await self.revocation_url()
        if url is None:
            return False
        form = {"token": refresh_token, "token_type_hint": "refresh_token"}
        secrets = self._secrets(refresh_token)
        response = await self._post(url, form, secrets)
        if response.is_success:
            return True
        self._raise_oauth_error(url, response, json_body(response), secrets, what="revocation")

    @staticmethod
    def _raise_oauth_error(
        url: str,
        response: httpx.Response,
        body: Any,
        secrets: tuple[str, ...],
        *,
        what: str = "token endpoint",
    ) -> NoReturn:
        status = response.status_code
        error = description = ""
        if isinstance(body, Mapping):
            error = str(body.get("error") or "")
            description = str(body.get("error_description") or "")
        elif body is None and response.content:
            # Only the status and content type: an HTML error page may echo the request.
            kind = response.headers.get("content-type", "no content type")
            message = f"{what} {url}: {status} with a body that is not JSON ({kind})"
            if status in (401, 403) and what == "token endpoint":
                raise ClientRejected(message + ": check the client settings", status=status)
            raise_status(response, message)
        text = redact(f"{error}: {description}" if description else error, secrets)[:500]
        message = f"{what} {url}: {status} {text}".rstrip()
        if error == "invalid_grant":
            raise InvalidGrant(message, status=status)
        if error in ("invalid_client", "unauthorized_client") or (not error and status == 401):
            raise ClientRejected(
                f"{message}: the provider refused the client; check clientId, clientAuthMethod "
                "and the client secret",
                status=status,
            )
        if error and status < 500 and status != 429:
            raise BadRequest(message, status=status)
        raise_status(response, message)


__all__ = [
    "ClientAuth",
    "RequestShape",
    "ServiceError",
    "TokenEndpointClient",
    "jwt_expiry",
]
