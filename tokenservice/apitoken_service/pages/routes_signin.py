"""Sign-in, sign-out, and accepting an invitation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from apitoken_service.domain.accounts import PasswordRefused, SignInRefused
from apitoken_service.domain.errors import DomainError
from apitoken_service.pages.web import (
    SESSION_COOKIE,
    PageSession,
    anonymous_csrf,
    check_anonymous_csrf,
    keep_anonymous_csrf,
    page_session,
    redirect,
    render,
    runtime_of,
    start_session,
)

router = APIRouter(include_in_schema=False)


def _text(value: object, limit: int = 256) -> str:
    return value[:limit] if isinstance(value, str) else ""


@router.get("/")
async def home() -> Response:
    return redirect("/tokens")


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    token = anonymous_csrf(request)
    response = render(request, "signin.html", {"csrf": token, "values": {}})
    return keep_anonymous_csrf(request, response, token)


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    check_anonymous_csrf(request, form)
    values = {"workspace": _text(form.get("workspace"), 64), "user": _text(form.get("user"), 128)}
    runtime = runtime_of(request)
    try:
        signed_in = await runtime.require_opened().accounts.sign_in(
            values["workspace"], values["user"], _text(form.get("password")), runtime.clock()
        )
    except SignInRefused as refused:
        token = anonymous_csrf(request)
        response = render(
            request,
            "signin.html",
            {
                "csrf": token,
                "values": values,
                "error": refused.detail[:1].upper() + refused.detail[1:] + ".",
            },
            status=refused.status,
        )
        return keep_anonymous_csrf(request, response, token)
    response = redirect("/tokens")
    start_session(request, response, signed_in.secret)
    return response


@router.post("/signout")
async def signout(
    request: Request, signed_in: Annotated[PageSession, Depends(page_session)]
) -> Response:
    signed_in.check(await request.form())
    secret = request.cookies.get(SESSION_COOKIE, "")
    await runtime_of(request).require_opened().accounts.sign_out(secret)
    response = redirect("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/invitations/accept")
async def invitation_page(request: Request, code: str = "") -> Response:
    runtime = runtime_of(request)
    found = await runtime.require_opened().accounts.invitation(code[:100], runtime.clock())
    if found is None:
        return render(
            request,
            "error.html",
            {
                "title": "Invitation not valid",
                "message": "This invitation was used or has expired: ask an admin for a new one.",
            },
            status=404,
        )
    token = anonymous_csrf(request)
    response = render(request, "accept.html", {"csrf": token, "code": code, "invitation": found})
    return keep_anonymous_csrf(request, response, token)


@router.post("/invitations/accept")
async def accept_invitation(request: Request) -> Response:
    form = await request.form()
    check_anonymous_csrf(request, form)
    code = _text(form.get("code"), 100)
    password = _text(form.get("password"), 1024)
    runtime = runtime_of(request)
    accounts = runtime.require_opened().accounts
    now = runtime.clock()
    error = None
    if password != _text(form.get("confirm"), 1024):
        error = "The two passwords differ."
    else:
        try:
            signed_in = await accounts.accept(code, password, now)
        except PasswordRefused as refused:
            error = refused.detail[:1].upper() + refused.detail[1:] + "."
        except DomainError as refused:
            return render(
                request,
                "error.html",
                {"title": "Invitation not valid", "message": refused.detail},
                status=refused.status,
            )
        else:
            response = redirect("/tokens")
            start_session(request, response, signed_in.secret)
            return response
    found = await accounts.invitation(code, now)
    token = anonymous_csrf(request)
    response = render(
        request,
        "accept.html",
        {"csrf": token, "code": code, "invitation": found, "error": error},
        status=400,
    )
    return keep_anonymous_csrf(request, response, token)
