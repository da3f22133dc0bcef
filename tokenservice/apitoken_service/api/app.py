"""The app factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from apitoken_service import __version__
from apitoken_service.api import (
    routes_members,
    routes_oauth,
    routes_ops,
    routes_tokens,
    routes_wellknown,
)
from apitoken_service.api.deps import Runtime
from apitoken_service.api.middleware import LimitRequestBody, ObserveRequests
from apitoken_service.api.problems import install_problem_handlers
from apitoken_service.api.routes_oauth import TokenEndpointFastPath
from apitoken_service.clock import Clock, utc_now
from apitoken_service.metrics import Metrics
from apitoken_service.rate_limit import RateLimiter
from apitoken_service.settings import Settings
from apitoken_service.startup import open_service


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
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
        opened = await open_service(settings, clock)
        runtime.opened = opened
        reloader = asyncio.create_task(
            opened.reload_keys_forever(clock, settings.key_reload_seconds)
        )
        try:
            yield
        finally:
            reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reloader
            runtime.opened = None
            await opened.close()

    app = FastAPI(
        title="apitoken-service",
        version=__version__,
        summary="OAuth 2.0 API tokens: workspaces, members, tokens, and a rotating token endpoint.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_problem_handlers(app)
    for module in (routes_tokens, routes_members, routes_oauth, routes_wellknown, routes_ops):
        app.include_router(module.router)
    # Added last runs first: observe everything, limit bodies, then the token endpoint's fast path.
    app.add_middleware(TokenEndpointFastPath, runtime=runtime)
    app.add_middleware(LimitRequestBody, max_bytes=settings.max_request_bytes)
    app.add_middleware(ObserveRequests, metrics=runtime.metrics, access_log=settings.access_log)
    return app
