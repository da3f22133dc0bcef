"""Health, readiness, metrics, and the legacy paths that are gone."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from apitoken_service.api.deps import NowDep, RuntimeDep, ServiceDep
from apitoken_service.api.problems import problem

router = APIRouter(tags=["operations"])
log = logging.getLogger("apitoken_service.api")

LEGACY_MESSAGE = (
    "Legacy API access tokens are gone. Generate an OAuth 2.0 API token with "
    "POST /api/v1/workspaces/{workspace}/tokens and refresh access tokens at POST /oauth2/token."
)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable", responses={503: {}})
async def readyz(service: ServiceDep) -> Response:
    try:
        await service.storage.ping()
    except Exception as exc:
        log.warning("database unreachable", extra={"error": type(exc).__name__})
        return problem(503, "Not ready", "the database is not reachable")
    return JSONResponse({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep, service: ServiceDep, now: NowDep) -> Response:
    runtime.metrics.set_token_counts(await service.storage.count_tokens_by_status(now))
    return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.api_route(
    "/v4/apiAccessTokens",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
@router.api_route(
    "/v4/apiAccessTokens/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def legacy() -> Response:
    return problem(410, "Gone", LEGACY_MESSAGE)
