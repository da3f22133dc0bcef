"""Authorization server metadata from an issuer URL: RFC 8414, then OpenID Connect Discovery.

RFC 8414 puts the well-known segment between the host and the issuer's path
(`https://idp/.well-known/oauth-authorization-server/realms/x`); OpenID Connect appends it to
the issuer (`https://idp/realms/x/.well-known/openid-configuration`). Keycloak, Entra ID, Okta
and Auth0 answer the second, the project's token service the first: the first that answers 200
wins. The metadata's `issuer` must equal the configured one (RFC 8414 section 3.3), or a
mix-up could send refresh tokens elsewhere. Answers are cached per issuer for a while.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx

from apitoken_operator.providers.errors import BadRequest, ServiceError
from apitoken_operator.providers.http import Clock, json_body, raise_status, send, utc_now

WELL_KNOWN_OAUTH = "/.well-known/oauth-authorization-server"
WELL_KNOWN_OPENID = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ServerMetadata:
    token_endpoint: str
    revocation_endpoint: str | None


def metadata_urls(issuer: str) -> tuple[str, str]:
    """Where RFC 8414 and OpenID Connect Discovery publish the metadata of `issuer`."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, WELL_KNOWN_OAUTH + path, "", ""))
    openid = urlunsplit((parts.scheme, parts.netloc, path + WELL_KNOWN_OPENID, "", ""))
    return rfc8414, openid


def _same_issuer(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def parse_metadata(issuer: str, url: str, body: object) -> ServerMetadata:
    if not isinstance(body, Mapping):
        raise BadRequest(f"GET {url}: the metadata is not a JSON object")
    found = body.get("issuer")
    if not isinstance(found, str) or not _same_issuer(found, issuer):
        raise BadRequest(f"GET {url}: the metadata names issuer {found!r}, not {issuer!r}")
    token = body.get("token_endpoint")
    if not isinstance(token, str) or not token:
        raise BadRequest(f"GET {url}: the metadata has no token_endpoint")
    revocation = body.get("revocation_endpoint")
    return ServerMetadata(token, revocation if isinstance(revocation, str) and revocation else None)


class Discovery:
    """Metadata per issuer, fetched when first needed and again after `ttl`."""

    def __init__(self, *, ttl: timedelta = timedelta(hours=1), clock: Clock = utc_now) -> None:
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[ServerMetadata, datetime]] = {}

    def forget(self, issuer: str) -> None:
        """Drop a cached answer (an endpoint from it stopped working)."""
        self._cache.pop(issuer, None)

    async def metadata(self, http: httpx.AsyncClient, issuer: str) -> ServerMetadata:
        cached = self._cache.get(issuer)
        now = self._clock()
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        found = await fetch_metadata(http, issuer)
        self._cache[issuer] = (found, now)
        return found


async def fetch_metadata(http: httpx.AsyncClient, issuer: str) -> ServerMetadata:
    last: ServiceError | None = None
    for url in metadata_urls(issuer):
        request = http.build_request("GET", url, headers={"Accept": "application/json"})
        response = await send(http, request, ())
        if response.status_code in (404, 405, 410):
            last = BadRequest(f"GET {url}: {response.status_code}", status=response.status_code)
            continue
        if not response.is_success:
            raise_status(response, f"GET {url}: {response.status_code}")
        body = json_body(response)
        if body is None:
            raise BadRequest(f"GET {url}: {response.status_code} with a body that is not JSON")
        return parse_metadata(issuer, url, body)
    assert last is not None
    raise BadRequest(
        f"issuer {issuer} publishes no metadata ({last.message}; "
        f"{WELL_KNOWN_OPENID} too): set oauth2.tokenEndpoint",
        status=last.status,
    )
