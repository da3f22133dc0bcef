"""Pure ASGI middleware: request metrics and access log, and the request size limit."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apitoken_service.api.problems import CONTENT_TOO_LARGE, problem
from apitoken_service.api.routes_oauth import TOKEN_PATH
from apitoken_service.metrics import Metrics

log = logging.getLogger("apitoken_service.access")
errors = logging.getLogger("apitoken_service.errors")


def log_unhandled_error(exc: BaseException) -> None:
    """Names the exception type and place only: messages could quote request data."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    errors.error(
        "unhandled error",
        extra={
            "error": type(exc).__name__,
            "where": f"{frame.filename}:{frame.lineno}" if frame else None,
        },
    )


class RequestRecorder:
    """Counts a finished request by route template and status, times the token endpoint, and
    writes its access-log line. The label children are looked up once per (route, method,
    status): prometheus_client's `labels()` costs more than the increment itself.

    Successful refresh grants are access-logged one in `token_grant_log_every` (the line says
    so in `sampledOneIn`); every other request, and every failed grant, is logged. A busy
    token endpoint answers thousands of grants a second, each line cost about a tenth of a
    grant's CPU, and the metrics already count and time every one."""

    def __init__(
        self, metrics: Metrics, access_log: bool, *, token_grant_log_every: int = 1
    ) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._grant_log_every = token_grant_log_every
        self._grants = 0
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[int, Any] = {}

    def record(self, route: str, method: str, status: int, elapsed: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._metrics.requests.labels(
                route, method, str(status)
            )
        counter.inc()
        if route == TOKEN_PATH:
            latency = self._latencies.get(status)
            if latency is None:
                latency = self._latencies[status] = self._metrics.token_latency.labels(str(status))
            latency.observe(elapsed)
            if status == 200 and self._grant_log_every > 1:
                self._grants += 1
                if self._grants % self._grant_log_every != 1:
                    return
                self._log(route, method, status, elapsed, {"sampledOneIn": self._grant_log_every})
                return
        self._log(route, method, status, elapsed, {})

    def _log(
        self, route: str, method: str, status: int, elapsed: float, more: dict[str, Any]
    ) -> None:
        if self._access_log and log.isEnabledFor(logging.INFO):
            # makeRecord and handle, not log.info: the caller's file and line (a stack walk
            # per request) are of no use in an access log.
            log.handle(
                log.makeRecord(
                    log.name,
                    logging.INFO,
                    "",
                    0,
                    "request",
                    (),
                    None,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "durationMs": round(elapsed * 1000, 3),
                        **more,
                    },
                )
            )


class ObserveRequests:
    """Records every request (see RequestRecorder) and turns unexpected errors into a 500
    problem whose log line names the exception type and place only."""

    def __init__(self, app: ASGIApp, recorder: RequestRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def observe_send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        except Exception as exc:
            status = 500
            log_unhandled_error(exc)
            if not response_started:
                await problem(500, "Internal server error", "the service failed; see its logs")(
                    scope, receive, send
                )
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.recorder.record(route, scope["method"], status, time.perf_counter() - started)


class _TooLarge(HTTPException):
    """A Starlette HTTPException, so that FastAPI's body parsing re-raises it (it answers 400
    for any other exception) and the problem handler answers 413 (RFC 9110 section 15.5.14)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_detail(max_bytes))


def too_large_detail(max_bytes: int) -> str:
    return f"request bodies are limited to {max_bytes} bytes"


class LimitRequestBody:
    """413 for bodies above `max_bytes`, by Content-Length or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = True
                if too_large:
                    await self._reject(scope, receive, send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, CONTENT_TOO_LARGE, too_large_detail(self.max_bytes))(
            scope, receive, send
        )
