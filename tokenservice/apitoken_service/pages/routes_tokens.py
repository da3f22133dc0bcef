"""`/tokens` ("OAuth 2.0 API Tokens") and `/admin/tokens` (the same for every member's tokens).

Token values appear in exactly one answer: the POST that generates them (no-store, and the
page's script replaces that history entry with `/tokens`, so reload and Back load the list)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import Response

from apitoken_service.api.routes_oauth import TOKEN_PATH
from apitoken_service.api.routes_ops import LEGACY_MESSAGE
from apitoken_service.api.schemas import CreateToken
from apitoken_service.domain.errors import NotFound
from apitoken_service.domain.records import StatusFilter, TokenRecord
from apitoken_service.domain.rules import MAX_BULK_IDS, MAX_PAGE_LIMIT, effective_status
from apitoken_service.domain.service import BulkAction, IssuedToken
from apitoken_service.pages.web import (
    PageSession,
    admin_session,
    page_session,
    redirect,
    render,
    runtime_of,
)

router = APIRouter(include_in_schema=False)

Scope = Literal["user", "admin"]
LIFETIME_ERROR = "Enter a whole number of days from 1 to 365."
STATUSES: tuple[StatusFilter, ...] = ("active", "disabled", "expired")


def _view(token: TokenRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "owner": token.owner,
        "status": effective_status(token, now),
        "created": token.created_at,
        "expires": token.expires_at,
        "last_used": token.last_used_at,
    }


def _base(scope: Scope) -> str:
    return "/admin/tokens" if scope == "admin" else "/tokens"


async def _page(
    request: Request,
    signed_in: PageSession,
    scope: Scope,
    *,
    status: int = 200,
    owner: str | None = None,
    status_filter: StatusFilter | None = None,
    **extra: Any,
) -> Response:
    runtime = runtime_of(request)
    now = runtime.clock()
    caller = signed_in.caller
    found, _ = await runtime.require_service().list_tokens(
        caller,
        owner=(owner or "*") if scope == "admin" else caller.user,
        status=status_filter,
        external_ref=None,
        after=None,
        limit=MAX_PAGE_LIMIT,
        now=now,
    )
    members: list[str] = []
    if scope == "admin":
        listed, _ = await runtime.require_service().list_members(caller, None, MAX_PAGE_LIMIT)
        members = [m.user for m in listed]
    context = {
        "caller": caller,
        "csrf": signed_in.csrf,
        "scope": scope,
        "base": _base(scope),
        "tokens": [_view(t, now) for t in found],
        "members": members,
        "statuses": STATUSES,
        "filters": {"owner": owner or "", "status": status_filter or ""},
        "client_id": caller.workspace,
        "token_endpoint": runtime.settings.issuer + TOKEN_PATH,
        "access_token_minutes": runtime.settings.access_token_ttl_seconds // 60,
        "legacy_message": LEGACY_MESSAGE,
        "generate": {"open": False, "errors": {}, "values": {"lifetime_days": "30"}},
        **extra,
    }
    return render(request, "tokens.html", context, status=status)


def _notice(request: Request) -> dict[str, Any] | None:
    done = request.query_params.get("done")
    if done not in ("disabled", "deleted"):
        return None
    try:
        count = int(request.query_params.get("count", "0"))
        until = datetime.fromisoformat(request.query_params.get("until", ""))
    except ValueError:
        return None
    return {"done": done, "count": count, "until": until}


@router.get("/tokens")
async def user_tokens(
    request: Request, signed_in: Annotated[PageSession, Depends(page_session)]
) -> Response:
    return await _page(request, signed_in, "user", notice=_notice(request))


@router.get("/admin/tokens")
async def admin_tokens(
    request: Request,
    signed_in: Annotated[PageSession, Depends(admin_session)],
    owner: str = "",
    status: str = "",
) -> Response:
    status_filter = next((s for s in STATUSES if s == status), None)
    return await _page(
        request,
        signed_in,
        "admin",
        owner=owner[:128] or None,
        status_filter=status_filter,
        notice=_notice(request),
    )


def _generate_input(form: FormData) -> tuple[dict[str, str], dict[str, str], CreateToken | None]:
    """The submitted values, an error per field, and the validated request (same rules as the
    management API: the API's own model checks the name and the lifetime)."""
    values = {
        "name": str(form.get("name", ""))[:400],
        "lifetime_days": str(form.get("lifetime_days", "")).strip()[:12],
    }
    errors: dict[str, str] = {}
    lifetime: int | str = values["lifetime_days"]
    if values["lifetime_days"].isascii() and values["lifetime_days"].isdigit():
        lifetime = int(values["lifetime_days"])
    try:
        return (
            values,
            errors,
            CreateToken.model_validate({"name": values["name"], "lifetimeDays": lifetime}),
        )
    except ValidationError as invalid:
        for error in invalid.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field == "lifetimeDays":
                errors["lifetime_days"] = LIFETIME_ERROR
            elif field == "name":
                errors["name"] = (
                    "Enter a name." if not values["name"].strip() else f"Name: {error['msg']}."
                )
        return values, errors, None


@router.post("/tokens/generate")
async def generate(
    request: Request, signed_in: Annotated[PageSession, Depends(page_session)]
) -> Response:
    form = await request.form()
    signed_in.check(form)
    values, errors, valid = _generate_input(form)
    if valid is None:
        return await _page(
            request,
            signed_in,
            "user",
            status=400,
            generate={"open": True, "errors": errors, "values": values},
        )
    runtime = runtime_of(request)
    now = runtime.clock()
    issued: IssuedToken = await runtime.require_service().create_token(
        signed_in.caller, valid.name, valid.lifetimeDays, None, now
    )
    return await _page(request, signed_in, "user", issued=issued)


def _selection(form: FormData) -> tuple[BulkAction | None, list[str]]:
    action = form.get("action")
    ids = [str(i)[:64] for i in form.getlist("ids") if isinstance(i, str) and i][:MAX_BULK_IDS]
    if action not in ("disable", "delete"):
        return None, ids
    return action, list(dict.fromkeys(ids))  # type: ignore[return-value]


async def _actions(request: Request, signed_in: PageSession, scope: Scope) -> Response:
    form = await request.form()
    signed_in.check(form)
    action, ids = _selection(form)
    if action is None or not ids:
        return await _page(
            request, signed_in, scope, status=400, selection_error="Select at least one token."
        )
    runtime = runtime_of(request)
    service = runtime.require_service()
    now = runtime.clock()
    if form.get("confirmed") != "yes":
        chosen = []
        for token_id in ids:
            with contextlib.suppress(NotFound):
                chosen.append(_view(await service.get_token(signed_in.caller, token_id), now))
        return render(
            request,
            "confirm.html",
            {
                "caller": signed_in.caller,
                "csrf": signed_in.csrf,
                "action": action,
                "tokens": chosen,
                "base": _base(scope),
                "scope": scope,
            },
        )
    results = await service.bulk(signed_in.caller, action, ids, now)
    count = sum(1 for r in results if r.ok)
    until = now + timedelta(seconds=runtime.settings.access_token_ttl_seconds)
    done = "disabled" if action == "disable" else "deleted"
    return redirect(
        f"{_base(scope)}?done={done}&count={count}&until={until.isoformat().replace('+', '%2B')}"
    )


@router.post("/tokens/actions")
async def user_actions(
    request: Request, signed_in: Annotated[PageSession, Depends(page_session)]
) -> Response:
    return await _actions(request, signed_in, "user")


@router.post("/admin/tokens/actions")
async def admin_actions(
    request: Request, signed_in: Annotated[PageSession, Depends(admin_session)]
) -> Response:
    return await _actions(request, signed_in, "admin")
