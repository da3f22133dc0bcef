"""RFC 9457 problem details, and the exception handlers that produce them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from apitoken_service.domain.errors import DomainError, Unauthenticated

PROBLEM_JSON = "application/problem+json"
CONTENT_TOO_LARGE = "Content too large"


class _ProblemBody(BaseModel):
    type: str
    title: str
    status: int
    detail: str


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": _ProblemBody, "content": {PROBLEM_JSON: {}}}
    for code in (401, 403, 404, 409, 422)
}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _message(error: dict[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a JSON integer"
    if kind in ("string_type",):
        return "must be a JSON string"
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        # The service's own validators (schemas.py) say what is wrong, never quoting the value.
        return str(error.get("ctx", {}).get("error", "is not valid"))
    # pydantic's messages name the rule, not the input.
    return str(error.get("msg", "is not valid"))


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = []
    for error in exc.errors():
        # Echo neither the input nor pydantic's `input` member: it could be a token value.
        errors.append({"field": _field(tuple(error.get("loc", ()))), "detail": _message(error)})
    first = errors[0] if errors else {"field": "body", "detail": "is not valid"}
    return problem(
        422,
        "Invalid request",
        f"{first['field']}: {first['detail']}",
        errors=errors,
    )


_FASTAPI_BODY_ERROR = "There was an error parsing the body"
_BODY_NOT_JSON = {"field": "body", "detail": "is not valid JSON"}


def _allowed_methods(request: Request) -> str:
    """Every method of every route at this path: Starlette's 405 names the first route's only
    (a path with GET and POST routes answered `Allow: POST`)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_problem(exc)

    async def on_domain(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        headers = None
        if isinstance(exc, Unauthenticated):
            headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return problem(exc.status, exc.title, exc.detail, headers=headers)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer to a JSON body that is not UTF-8: the documented 422 instead.
            return problem(
                422, "Invalid request", "body: is not valid JSON", errors=[_BODY_NOT_JSON]
            )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        title = CONTENT_TOO_LARGE if exc.status_code == 413 else str(exc.detail)
        return problem(exc.status_code, title, str(exc.detail), headers=headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(StarletteHTTPException, on_http)
