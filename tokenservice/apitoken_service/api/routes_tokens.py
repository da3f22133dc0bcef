"""`/api/v1/workspaces/{workspace}/tokens`: generate, list, get, disable, delete, bulk."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from apitoken_service.api.cursors import CURSOR_PATTERN, after_key, encode_cursor
from apitoken_service.api.deps import CallerDep, NowDep, ServiceDep
from apitoken_service.api.problems import PROBLEM_RESPONSES
from apitoken_service.api.schemas import (
    BulkItem,
    BulkRequest,
    BulkResponse,
    CreatedToken,
    CreateToken,
    Token,
    TokenPage,
)
from apitoken_service.domain.rules import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

router = APIRouter(
    prefix="/api/v1/workspaces/{workspace}/tokens", tags=["tokens"], responses=PROBLEM_RESPONSES
)


@router.post("", status_code=201, summary="Generate a token (values shown once)")
async def create_token(
    body: CreateToken, caller: CallerDep, service: ServiceDep, now: NowDep, response: Response
) -> CreatedToken:
    response.headers["Cache-Control"] = "no-store"
    issued = await service.create_token(caller, body.name, body.lifetimeDays, body.externalRef, now)
    return CreatedToken.of_issued(issued, now)


@router.get("", summary="List tokens (metadata only)")
async def list_tokens(
    caller: CallerDep,
    service: ServiceDep,
    now: NowDep,
    owner: Annotated[
        str | None,
        Query(max_length=128, description="a member's tokens (admins), or `*` for everyone's"),
    ] = None,
    status: Annotated[Literal["active", "disabled", "expired"] | None, Query()] = None,
    external_ref: Annotated[str | None, Query(alias="externalRef", max_length=256)] = None,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
) -> TokenPage:
    page, last = await service.list_tokens(
        caller,
        owner=owner,
        status=status,
        external_ref=external_ref,
        after=after_key(cursor),
        limit=limit,
        now=now,
    )
    return TokenPage(items=[Token.of(t, now) for t in page], next=encode_cursor(last))


@router.post("/bulk", summary="Disable or delete several tokens; one result per id")
async def bulk(
    body: BulkRequest, caller: CallerDep, service: ServiceDep, now: NowDep
) -> BulkResponse:
    results = await service.bulk(caller, body.action, body.ids, now)
    return BulkResponse(results=[BulkItem.of(r) for r in results])


@router.get("/{token_id}", summary="A token's metadata")
async def get_token(token_id: str, caller: CallerDep, service: ServiceDep, now: NowDep) -> Token:
    return Token.of(await service.get_token(caller, token_id), now)


@router.post("/{token_id}/disable", summary="Disable a token (irreversible; idempotent)")
async def disable_token(
    token_id: str, caller: CallerDep, service: ServiceDep, now: NowDep
) -> Token:
    return Token.of(await service.disable_token(caller, token_id, now), now)


@router.delete("/{token_id}", status_code=204, summary="Delete a token")
async def delete_token(token_id: str, caller: CallerDep, service: ServiceDep) -> Response:
    await service.delete_token(caller, token_id)
    return Response(status_code=204)
