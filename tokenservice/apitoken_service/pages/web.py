"""What every page shares: templates, the security headers, the session cookie and CSRF.

Every page answer is `Cache-Control: no-store` (a page may hold a token value once), carries a
Content-Security-Policy that allows scripts and styles from this origin only (no inline code),
and sets the session cookie HttpOnly, SameSite=Strict, and Secure when served over TLS."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from apitoken_service.api.deps import Runtime
from apitoken_service.domain.accounts import SESSION_LIFETIME
from apitoken_service.domain.records import SessionRecord
from apitoken_service.domain.service import Caller

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

SESSION_COOKIE = "apitoken_session"
# Forms shown before sign-in (sign-in, accepting an invitation) use a double-submit cookie.
ANONYMOUS_CSRF_COOKIE = "apitoken_csrf"
CSRF_FIELD = "csrf_token"

SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class SignInNeeded(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""


class CsrfRefused(Exception):
    """A form without this session's CSRF token: 403, nothing done."""


class AdminOnly(Exception):
    """A member opened an admin page: 403."""


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def served_over_tls(request: Request) -> bool:
    """TLS here, or at a proxy in front (the issuer is the public URL)."""
    return request.url.scheme == "https" or runtime_of(request).settings.issuer.startswith(
        "https://"
    )


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=served_over_tls(request),
    )


def render(
    request: Request, template: str, context: Mapping[str, Any], status: int = 200
) -> Response:
    response = templates.TemplateResponse(request, template, dict(context), status_code=status)
    return secure(response)


def redirect(url: str) -> Response:
    return secure(RedirectResponse(url, status_code=303))


def fmt_time(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


templates.env.filters["when"] = fmt_time


# -- the signed-in member ------------------------------------------------------------------


class PageSession:
    """The signed-in member of a page request, and their session's CSRF token."""

    def __init__(self, caller: Caller, session: SessionRecord) -> None:
        self.caller = caller
        self.csrf = session.csrf

    def check(self, form: FormData) -> None:
        presented = form.get(CSRF_FIELD)
        if not isinstance(presented, str) or not secrets.compare_digest(presented, self.csrf):
            raise CsrfRefused


async def page_session(request: Request) -> PageSession:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise SignInNeeded
    runtime = runtime_of(request)
    found = await runtime.require_opened().accounts.caller_of(secret, runtime.clock())
    if found is None:
        raise SignInNeeded
    return PageSession(*found)


async def admin_session(request: Request) -> PageSession:
    signed_in = await page_session(request)
    if not signed_in.caller.is_admin:
        raise AdminOnly
    return signed_in


def start_session(request: Request, response: Response, secret: str) -> None:
    set_cookie(request, response, SESSION_COOKIE, secret, int(SESSION_LIFETIME.total_seconds()))
    response.delete_cookie(ANONYMOUS_CSRF_COOKIE, path="/")


# -- forms before sign-in ------------------------------------------------------------------


def anonymous_csrf(request: Request) -> str:
    return request.cookies.get(ANONYMOUS_CSRF_COOKIE) or secrets.token_urlsafe(32)


def keep_anonymous_csrf(request: Request, response: Response, token: str) -> Response:
    set_cookie(request, response, ANONYMOUS_CSRF_COOKIE, token, 3600)
    return response


def check_anonymous_csrf(request: Request, form: FormData) -> None:
    cookie = request.cookies.get(ANONYMOUS_CSRF_COOKIE)
    presented = form.get(CSRF_FIELD)
    if not cookie or not isinstance(presented, str):
        raise CsrfRefused
    if not secrets.compare_digest(cookie, presented):
        raise CsrfRefused


def install_page_handlers(app: Any) -> None:
    async def sign_in_needed(request: Request, _exc: Exception) -> Response:
        return redirect("/signin")

    async def csrf_refused(request: Request, _exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Form refused",
                "message": "This form did not come from this site or has expired: "
                "reload the page and try again. Nothing was changed.",
            },
            status=403,
        )

    async def admin_only(request: Request, _exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            {"title": "Forbidden", "message": "Only workspace admins can open this page."},
            status=403,
        )

    app.add_exception_handler(SignInNeeded, sign_in_needed)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_exception_handler(AdminOnly, admin_only)
