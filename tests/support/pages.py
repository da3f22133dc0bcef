"""A browser-less client of the pages: cookies kept by httpx, CSRF tokens read from each form."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
VALUE = re.compile(r'<code id="(access-token|refresh-token)"[^>]*>([^<]+)</code>')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


def values_in(page: str) -> dict[str, str]:
    """The token values a page shows, by the id of their element."""
    return {kind: html.unescape(value) for kind, value in VALUE.findall(page)}


@dataclass
class PageUser:
    http: httpx.AsyncClient
    csrf: str = ""

    async def sign_in(self, workspace: str, user: str, password: str) -> httpx.Response:
        form = await self.http.get("/signin")
        response = await self.http.post(
            "/signin",
            data={
                "csrf_token": csrf_of(form.text),
                "workspace": workspace,
                "user": user,
                "password": password,
            },
        )
        if response.status_code == 303:
            self.csrf = csrf_of((await self.http.get("/tokens")).text)
        return response

    async def post(self, path: str, data: dict[str, str | list[str]]) -> httpx.Response:
        return await self.http.post(path, data={"csrf_token": self.csrf, **data})

    async def generate(self, name: str, days: str = "30") -> httpx.Response:
        return await self.post("/tokens/generate", {"name": name, "lifetime_days": days})
