"""HTTP plumbing every provider client shares: TLS trust, sending, status to exception.

The httpx.AsyncClient is injected (its timeouts, TLS trust and transport are the caller's), so
tests drive the clients with httpx.MockTransport. Every failure becomes one of the exceptions in
`providers.errors`; no message, repr or exception chain carries a token value.
"""

import asyncio
import base64
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import httpx

from apitoken_operator.providers.errors import (
    BadRequest,
    NotFound,
    ResponseLost,
    ServerError,
    ServiceError,
    Timeout,
    Unauthorized,
    Unreachable,
    redact,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def ssl_context(ca_bundle_b64: str | None) -> ssl.SSLContext | bool:
    """TLS verification for a workspace: its caBundle (base64 PEM) or the system store."""
    if not ca_bundle_b64:
        return True
    return ssl.create_default_context(cadata=base64.b64decode(ca_bundle_b64).decode())


class BoundedTransport(httpx.AsyncBaseTransport):
    """At most `limit` requests inside the wrapped transport; the rest wait on a semaphore.

    httpcore's pool rescans every queued request against every connection each time a
    request enters or leaves it, so a thousand runs queued there cost CPU quadratic in the
    queue (14 % of the operator's samples while 500 ApiTokens converged, make bench-operator
    under py-spy); a semaphore wakes one waiter in constant time. `limit` matches the pool's
    connections, so requests queue here, not in the pool."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self._inner = inner
        self._slots = asyncio.Semaphore(limit)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._slots:
            response = await self._inner.handle_async_request(request)
            # The body is read inside the slot, so the connection is free when it is released
            # (provider answers are small JSON documents).
            await response.aread()
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def send(
    http: httpx.AsyncClient, request: httpx.Request, secrets: tuple[str, ...]
) -> httpx.Response:
    what = f"{request.method} {request.url.copy_with(query=None)}"
    try:
        return await http.send(request)
    except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise Timeout(f"{what}: timed out ({type(exc).__name__})") from None
    except httpx.TimeoutException as exc:
        # Sent, perhaps acted on, never answered.
        raise ResponseLost(
            f"{what}: timed out waiting for the answer ({type(exc).__name__})"
        ) from None
    except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
        raise ResponseLost(
            f"{what}: connection lost before the answer ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        detail = redact(str(exc), secrets)[:200]
        raise Unreachable(f"{what}: {type(exc).__name__}: {detail}") from None


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or utc_now())).total_seconds(), 0.0)


def raise_status(response: httpx.Response, message: str) -> NoReturn:
    status = response.status_code
    if status == 429 or status >= 500:
        raise ServerError(message, status=status, retry_after=retry_after(response))
    if status in (401, 403):
        raise Unauthorized(message, status=status)
    if status in (404, 410):
        raise NotFound(message, status=status)
    if status >= 400:
        raise BadRequest(message, status=status)
    raise ServiceError(message, status=status)
