"""HTTP plumbing every provider client shares: TLS trust, sending, status to exception.

The httpx.AsyncClient is injected (its timeouts, TLS trust and transport are the caller's), so
tests drive the clients with httpx.MockTransport. Every failure becomes one of the exceptions in
`providers.errors`; no message, repr or exception chain carries a token value.
"""

import base64
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx

from apitoken_operator.providers.errors import (
    BadRequest,
    NotFound,
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


async def send(
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


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


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
