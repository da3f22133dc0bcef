"""`/admin/members`: invite (a one-time link), change role, remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apitoken_service.domain.errors import DomainError
from apitoken_service.domain.identifiers import valid_user
from apitoken_service.domain.records import Role
from apitoken_service.domain.rules import MAX_PAGE_LIMIT
from apitoken_service.pages.web import PageSession, admin_session, redirect, render, runtime_of

router = APIRouter(include_in_schema=False)
ROLES: tuple[Role, ...] = ("member", "admin")


def _role(value: object) -> Role | None:
    for role in ROLES:
        if value == role:
            return role
    return None


async def _page(
    request: Request, signed_in: PageSession, status: int = 200, **extra: Any
) -> Response:
    runtime = runtime_of(request)
    listed, _ = await runtime.require_service().list_members(signed_in.caller, None, MAX_PAGE_LIMIT)
    context = {
        "caller": signed_in.caller,
        "csrf": signed_in.csrf,
        "members": listed,
        "roles": ROLES,
        "invite": {"user": "", "role": "member"},
        "message": request.query_params.get("done", "")[:40],
        **extra,
    }
    return render(request, "members.html", context, status=status)


@router.get("/admin/members")
async def members_page(
    request: Request, signed_in: Annotated[PageSession, Depends(admin_session)]
) -> Response:
    return await _page(request, signed_in)


@router.post("/admin/members/invite")
async def invite(
    request: Request, signed_in: Annotated[PageSession, Depends(admin_session)]
) -> Response:
    form = await request.form()
    signed_in.check(form)
    user = str(form.get("user", ""))[:200].strip()
    role = _role(form.get("role", "member"))
    values = {"user": user, "role": role or ""}
    if not valid_user(user):
        return await _page(
            request,
            signed_in,
            400,
            invite=values,
            invite_error="Letters, digits, '.', '_', '@', '+' or '-', at most 128.",
        )
    if role is None:
        return await _page(request, signed_in, 400, invite=values, invite_error="Pick a role.")
    runtime = runtime_of(request)
    try:
        secret = await runtime.require_opened().accounts.invite(
            signed_in.caller,
            user,
            role,
            runtime.clock(),
        )
    except DomainError as refused:
        return await _page(
            request, signed_in, refused.status, invite=values, invite_error=refused.detail
        )
    link = f"{runtime.settings.issuer}/invitations/accept?code={secret}"
    return await _page(request, signed_in, invited={"user": user, "link": link})


@router.post("/admin/members/role")
async def change_role(
    request: Request, signed_in: Annotated[PageSession, Depends(admin_session)]
) -> Response:
    form = await request.form()
    signed_in.check(form)
    user = str(form.get("user", ""))[:200]
    role = _role(form.get("role"))
    runtime = runtime_of(request)
    if role is None:
        return await _page(request, signed_in, 400, error="Pick a role.")
    try:
        await runtime.require_service().change_role(
            signed_in.caller,
            user,
            role,
            runtime.clock(),
        )
    except DomainError as refused:
        return await _page(request, signed_in, refused.status, error=refused.detail)
    return redirect("/admin/members?done=role")


@router.post("/admin/members/remove")
async def remove(
    request: Request, signed_in: Annotated[PageSession, Depends(admin_session)]
) -> Response:
    form = await request.form()
    signed_in.check(form)
    user = str(form.get("user", ""))[:200]
    try:
        await runtime_of(request).require_service().remove_member(signed_in.caller, user)
    except DomainError as refused:
        return await _page(request, signed_in, refused.status, error=refused.detail)
    return redirect("/admin/members?done=removed")
