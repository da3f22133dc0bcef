"""`/api/v1/workspaces/{workspace}/members` (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from apitoken_service.api.cursors import CURSOR_PATTERN, after_key, encode_cursor
from apitoken_service.api.deps import CallerDep, NowDep, ServiceDep
from apitoken_service.api.problems import PROBLEM_RESPONSES
from apitoken_service.api.schemas import AddMember, CreatedMember, Member, MemberPage
from apitoken_service.clock import rfc3339
from apitoken_service.domain.rules import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

router = APIRouter(
    prefix="/api/v1/workspaces/{workspace}/members", tags=["members"], responses=PROBLEM_RESPONSES
)


@router.post("", status_code=201, summary="Add a member; answers their first token pair once")
async def add_member(
    body: AddMember, caller: CallerDep, service: ServiceDep, now: NowDep, response: Response
) -> CreatedMember:
    response.headers["Cache-Control"] = "no-store"
    member, issued = await service.add_member(caller, body.user, body.role, body.lifetimeDays, now)
    return CreatedMember(
        **Member.of(member).model_dump(),
        tokenId=issued.token.id,
        accessToken=issued.access_token.value,
        accessTokenExpiresAt=rfc3339(issued.access_token.expires_at),
        refreshToken=issued.refresh_token,
        refreshTokenExpiresAt=rfc3339(issued.token.expires_at),
    )


@router.get("", summary="List members")
async def list_members(
    caller: CallerDep,
    service: ServiceDep,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
) -> MemberPage:
    page, last = await service.list_members(caller, after_key(cursor), limit)
    return MemberPage(items=[Member.of(m) for m in page], next=encode_cursor(last))


@router.delete("/{user}", status_code=204, summary="Remove a member and delete their tokens")
async def remove_member(user: str, caller: CallerDep, service: ServiceDep) -> Response:
    await service.remove_member(caller, user)
    return Response(status_code=204)
