"""FastAPI dependencies: the runtime, the clock, and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from apitoken_service.clock import Clock
from apitoken_service.domain.service import Caller, TokenService
from apitoken_service.metrics import Metrics
from apitoken_service.rate_limit import RateLimiter
from apitoken_service.settings import Settings
from apitoken_service.startup import OpenedService


@dataclass
class Runtime:
    """Everything a request needs, built by the app's lifespan (no module-level singletons)."""

    settings: Settings
    clock: Clock
    metrics: Metrics
    rate_limiter: RateLimiter
    opened: OpenedService | None = None

    def require_opened(self) -> OpenedService:
        if self.opened is None:
            raise RuntimeError("the service is not started")
        return self.opened

    def require_service(self) -> TokenService:
        return self.require_opened().service


# Dependencies are `async def`: FastAPI runs plain `def` dependencies in a thread pool.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_service(runtime: RuntimeDep) -> TokenService:
    return runtime.require_service()


async def get_now(runtime: RuntimeDep) -> datetime:
    return runtime.clock()


ServiceDep = Annotated[TokenService, Depends(get_service)]
NowDep = Annotated[datetime, Depends(get_now)]
WorkspaceDep = Annotated[str, Path(min_length=1, max_length=64)]

_bearer = HTTPBearer(auto_error=False, description="An access token of this workspace")


async def get_caller(
    workspace: WorkspaceDep,
    service: ServiceDep,
    now: NowDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return await service.authenticate(
        None if credentials is None else credentials.credentials, workspace, now
    )


CallerDep = Annotated[Caller, Depends(get_caller)]
