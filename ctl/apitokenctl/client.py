"""HTTP to the token service: refresh the stored credential, then call the management API."""

from __future__ import annotations

from typing import Any

import httpx

from apitokenctl import config


class NotSignedIn(Exception):
    """No credential, or the service rejected it (exit code 3)."""


class Refused(Exception):
    """The service refused the request (exit code 1); `detail` is its problem message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error_description") or body.get("error"))
    return f"HTTP {response.status_code}"


def exchange(url: str, refresh_token: str) -> tuple[str, str]:
    """(access token, next refresh token) for a refresh token; NotSignedIn when refused."""
    try:
        response = httpx.post(
            f"{url}/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise Refused(0, f"cannot reach {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise NotSignedIn(f"the credential was rejected: {_detail(response)}")
    body = response.json()
    return str(body["access_token"]), str(body.get("refresh_token") or refresh_token)


class Api:
    def __init__(self, credential: config.Credential, access_token: str) -> None:
        self.credential = credential
        self._http = httpx.Client(
            base_url=f"{credential.url}/api/v1/workspaces/{credential.workspace}",
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=30,
        )

    @classmethod
    def signed_in(cls) -> Api:
        credential = config.load()
        if credential is None:
            raise NotSignedIn("not signed in: run `apitokenctl login` first")
        access, rotated = exchange(credential.url, credential.refresh_token)
        credential.refresh_token = rotated
        config.save(credential)  # before anything else: the old refresh token is spent
        return cls(credential, access)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Refused(0, f"cannot reach the service: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise NotSignedIn(f"the credential was rejected: {_detail(response)}")
        if response.status_code >= 400:
            raise Refused(response.status_code, _detail(response))
        return None if response.status_code == 204 else response.json()

    def pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.call(
                "GET", path, params={**params, **({"cursor": cursor} if cursor else {})}
            )
            items.extend(page["items"])
            cursor = page.get("next")
            if not cursor:
                return items
