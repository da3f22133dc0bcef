"""`POST /oauth2/token` as a plain ASGI handler: the hot path of the service.

The app (TokenServiceApp) hands this request over before FastAPI, Starlette's middleware and
router see it: their request and response objects, dependency solving and per-request
telemetry checks cost several times more CPU than the grant itself (profiled). So this handler
does what they would do, in the same way: the body size limit (413 problem), the rate limit,
form parsing, RFC 6749 errors, metrics and the access log, and the 500 problem for unexpected
errors.
"""

from __future__ import annotations

import json
import time

from starlette.types import Message, Receive, Scope, Send

from apitoken_service.api.deps import Runtime
from apitoken_service.api.middleware import (
    RequestRecorder,
    log_unhandled_error,
    too_large_detail,
)
from apitoken_service.api.oauth_form import parse_form
from apitoken_service.api.problems import CONTENT_TOO_LARGE, problem
from apitoken_service.api.routes_oauth import TOKEN_PATH
from apitoken_service.domain.errors import (
    InvalidRequest,
    OAuthError,
    RefreshTokenReplayed,
    UnsupportedGrantType,
)

_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
]
# The success body, filled in without a JSON encoder: every value is an integer, a JWT
# (base64url and dots) or a refresh token (a fixed prefix and base64url), none needs escaping.
_GRANTED = (
    b'{"access_token":"%s","token_type":"Bearer","expires_in":%d,'
    b'"refresh_token":"%s","refresh_token_expires_in":%d}'
)


class _RateLimited(OAuthError):
    error = "temporarily_unavailable"
    status = 429


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class TokenEndpoint:
    """The refresh grant with rotation (DESIGN.md), answered straight on ASGI messages."""

    def __init__(self, runtime: Runtime, recorder: RequestRecorder) -> None:
        self._runtime = runtime
        self._recorder = recorder
        self._max_bytes = runtime.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        try:
            try:
                answer = await self._answer(scope, receive)
            except _Disconnected:
                status = 499  # the client left before sending its body: nobody to answer
                return
            except Exception as exc:
                log_unhandled_error(exc)
                answer = _problem(500, "Internal server error", "the service failed; see its logs")
            status = answer[0]
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*answer[1], (b"content-length", b"%d" % len(answer[2]))],
                }
            )
            await send({"type": "http.response.body", "body": answer[2]})
        finally:
            self._recorder.record(TOKEN_PATH, "POST", status, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive) -> _Answer:
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    too_large = int(value) > self._max_bytes
                except ValueError:
                    too_large = True
                if too_large:
                    return self._too_large()
        runtime = self._runtime
        client = scope.get("client")
        wait = runtime.rate_limiter.acquire(client[0] if client else "", time.monotonic())
        if wait > 0:
            return _error(
                _RateLimited("too many token requests from this client; retry later"),
                [(b"retry-after", runtime.rate_limiter.retry_after_header(wait).encode())],
            )
        try:
            body = await self._read_body(receive)
        except _TooLarge:
            return self._too_large()
        service = runtime.require_service()
        try:
            presented = _refresh_token_of(parse_form(content_type, body))
            now = runtime.clock()
            result = await service.refresh(presented, now)
        except RefreshTokenReplayed as exc:
            runtime.metrics.replays.inc()
            return _error(exc)
        except OAuthError as exc:
            return _error(exc)
        now_ms = int(now.timestamp() * 1000)
        content = _GRANTED % (
            result.access_token.value.encode("ascii"),
            result.access_token.expires_in,
            result.refresh_token.encode("ascii"),
            max(0, (result.refresh_token_expires_at_ms - now_ms) // 1000),
        )
        return 200, _JSON_HEADERS, content

    async def _read_body(self, receive: Receive) -> bytes:
        body = b""
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            body += chunk
            if len(body) > self._max_bytes:
                raise _TooLarge
            if not message.get("more_body", False):
                return body

    def _too_large(self) -> _Answer:
        return _problem(413, CONTENT_TOO_LARGE, too_large_detail(self._max_bytes))


def _refresh_token_of(form: dict[str, str]) -> str:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    if grant_type != "refresh_token":
        raise UnsupportedGrantType("only the refresh_token grant is supported")
    presented = form.get("refresh_token")
    if not presented:
        raise InvalidRequest("refresh_token is required")
    return presented


def _error(exc: OAuthError, extra_headers: list[tuple[bytes, bytes]] | None = None) -> _Answer:
    """An RFC 6749 section 5.2 error."""
    content = json.dumps(
        {"error": exc.error, "error_description": exc.description}, separators=(",", ":")
    ).encode()
    return exc.status, _JSON_HEADERS + (extra_headers or []), content


def _problem(status: int, title: str, detail: str) -> _Answer:
    """The service's problem+json answer, as its other routes give it."""
    response = problem(status, title, detail)
    headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    return status, headers, bytes(response.body)
