"""The app factory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from apitoken_service import __version__
from apitoken_service.api import (
    routes_members,
    routes_oauth,
    routes_ops,
    routes_tokens,
    routes_wellknown,
)
from apitoken_service.api.deps import Runtime
from apitoken_service.api.middleware import LimitRequestBody, ObserveRequests, RequestRecorder
from apitoken_service.api.problems import install_problem_handlers
from apitoken_service.api.routes_oauth import TOKEN_PATH
from apitoken_service.api.token_endpoint import TokenEndpoint
from apitoken_service.clock import Clock, utc_now
from apitoken_service.metrics import Metrics
from apitoken_service.pages import routes_members as page_members
from apitoken_service.pages import routes_signin as page_signin
from apitoken_service.pages import routes_tokens as page_tokens
from apitoken_service.pages.web import HERE as PAGES_DIR
from apitoken_service.pages.web import install_page_handlers
from apitoken_service.rate_limit import RateLimiter
from apitoken_service.settings import Settings
from apitoken_service.startup import open_service


class TokenServiceApp(FastAPI):
    """FastAPI, except that `POST /oauth2/token` goes straight to its plain ASGI handler."""

    token_endpoint: TokenEndpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == TOKEN_PATH and scope["method"] == "POST":
            await self.token_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> TokenServiceApp:
    runtime = Runtime(
        settings=settings,
        clock=clock,
        metrics=Metrics(),
        rate_limiter=RateLimiter(
            settings.token_rate_limit_per_second, settings.token_rate_limit_burst
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        opened = await open_service(settings, clock, signs=True)
        runtime.opened = opened
        # What is loaded by now (FastAPI, pydantic, SQLAlchemy, the app) lives as long as the
        # service: kept out of the cyclic collector's scans, a full collection costs
        # microseconds instead of a stall of every request in flight (measured: about 130 ms
        # per full collection on a 2-core machine).
        gc.collect()
        gc.freeze()
        reloader = asyncio.create_task(
            opened.reload_keys_forever(clock, settings.key_reload_seconds)
        )
        try:
            yield
        finally:
            gc.unfreeze()
            reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloader
            runtime.opened = None
            await opened.close()

    app = TokenServiceApp(
        # FastAPI's native OpenTelemetry would start tracing as soon as anything in the process
        # configures a global provider, recording URLs (where a client may misplace a token)
        # and costing a provider check per request. The service's telemetry is its Prometheus
        # metrics and JSON logs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="apitoken-service",
        version=__version__,
        summary="OAuth 2.0 API tokens: workspaces, members, tokens, and a rotating token endpoint.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    install_page_handlers(app)
    for module in (
        routes_tokens,
        routes_members,
        routes_oauth,
        routes_wellknown,
        routes_ops,
        page_signin,
        page_tokens,
        page_members,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=PAGES_DIR / "static"), name="static")
    recorder = RequestRecorder(
        runtime.metrics, settings.access_log, token_grant_log_every=settings.token_grant_log_every
    )
    app.token_endpoint = TokenEndpoint(runtime, recorder)
    # Added last runs first: observe everything, then limit bodies.
    app.add_middleware(LimitRequestBody, max_bytes=settings.max_request_bytes)
    app.add_middleware(ObserveRequests, recorder=recorder)
    return app
