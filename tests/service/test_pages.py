"""The pages through the real app: sign-in and lockout, cookie and header hygiene, CSRF, the
user and admin token pages, members and invitations. (The browser tier drives the same pages
in Chromium: tests/browser/.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from apitoken_service.api.deps import Runtime
from apitoken_service.domain.service import TokenService
from support.pages import PageUser, csrf_of, values_in
from support.tokenservice import ApiSession

from .conftest import BASE_URL, FakeClock

pytestmark = pytest.mark.service

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def alice(runtime: Runtime, admin: ApiSession, clock: FakeClock) -> PageUser:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    user = PageUser(admin.http)
    assert (await user.sign_in("acme", "alice", PASSWORD)).status_code == 303
    return user


@pytest.fixture
async def bob(
    app: FastAPI, runtime: Runtime, member: ApiSession, clock: FakeClock
) -> AsyncIterator[PageUser]:
    await runtime.require_opened().accounts.set_password("acme", "bob", PASSWORD, clock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        user = PageUser(client)
        assert (await user.sign_in("acme", "bob", PASSWORD)).status_code == 303
        yield user


def _cookie_header(response: httpx.Response, name: str) -> str:
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert found, response.headers
    return found[0]


async def test_session_cookie_is_httponly_samesite_strict_and_not_secure_over_http(
    runtime: Runtime, admin: ApiSession, clock: FakeClock
) -> None:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    user = PageUser(admin.http)
    response = await user.sign_in("acme", "alice", PASSWORD)
    cookie = _cookie_header(response, "apitoken_session").lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    assert response.headers["location"] == "/tokens"


async def test_session_cookie_is_secure_over_tls(
    app: FastAPI, runtime: Runtime, admin: ApiSession, clock: FakeClock
) -> None:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await PageUser(client).sign_in("acme", "alice", PASSWORD)
    cookie = _cookie_header(response, "apitoken_session").lower()
    assert "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


async def test_every_page_is_no_store_with_a_csp_without_inline_code(alice: PageUser) -> None:
    for path in ("/signin", "/tokens", "/admin/tokens", "/admin/members"):
        response = await alice.http.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "no-store"
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        # Every script is a file from this origin; no inline handlers.
        assert re.search(r"<script(?![^>]*\bsrc=)", response.text) is None
        assert re.search(r"\son[a-z]+=", response.text) is None
    generated = await alice.generate("ci")
    assert generated.headers["cache-control"] == "no-store"


async def test_pages_need_a_session(http: httpx.AsyncClient) -> None:
    for path in ("/tokens", "/admin/tokens", "/admin/members"):
        response = await http.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin"
    forged = await http.post("/tokens/generate", data={"name": "x", "lifetime_days": "1"})
    assert forged.status_code == 303


async def test_a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    alice: PageUser, admin: ApiSession, service: TokenService
) -> None:
    created = await admin.create_token("keep", 30)
    refused = [
        await alice.http.post("/tokens/generate", data={"name": "x", "lifetime_days": "5"}),
        await alice.http.post(
            "/tokens/generate", data={"csrf_token": "forged", "name": "x", "lifetime_days": "5"}
        ),
        await alice.http.post(
            "/tokens/actions",
            data={"action": "delete", "ids": created["id"], "confirmed": "yes"},
        ),
        await alice.http.post("/admin/members/invite", data={"user": "eve", "role": "admin"}),
        await alice.http.post("/signout", data={}),
    ]
    for response in refused:
        assert response.status_code == 403
        assert "did not come from this site" in response.text
    listed = await alice.http.get("/tokens")
    assert "keep" in listed.text and ">x<" not in listed.text
    assert "eve" not in (await alice.http.get("/admin/members")).text


async def test_sign_in_form_needs_its_csrf_cookie(
    http: httpx.AsyncClient, runtime: Runtime, admin: ApiSession, clock: FakeClock
) -> None:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    response = await http.post(
        "/signin",
        data={"csrf_token": "guess", "workspace": "acme", "user": "alice", "password": PASSWORD},
    )
    assert response.status_code == 403
    assert "apitoken_session" not in response.headers.get("set-cookie", "")


async def test_repeated_failures_lock_the_account_for_a_growing_time(
    http: httpx.AsyncClient, runtime: Runtime, admin: ApiSession, clock: FakeClock
) -> None:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    user = PageUser(http)
    for _ in range(5):
        wrong = await user.sign_in("acme", "alice", "not the password")
        assert wrong.status_code == 401
        assert "The workspace, user or password is not right." in wrong.text
    locked = await user.sign_in("acme", "alice", "not the password")
    assert locked.status_code == 429 and "try again after 12:00:30 UTC" in locked.text
    # While locked even the right password is refused, without a session.
    still = await user.sign_in("acme", "alice", PASSWORD)
    assert still.status_code == 429 and "apitoken_session" not in str(still.headers)
    clock.advance(31)
    again = await user.sign_in("acme", "alice", "not the password")
    assert again.status_code == 429 and "12:01:31 UTC" in again.text  # doubled: 60 s
    clock.advance(61)
    assert (await user.sign_in("acme", "alice", PASSWORD)).status_code == 303
    # Success resets the count.
    assert (await user.sign_in("acme", "alice", "wrong again!")).status_code == 401


async def test_unknown_users_and_non_members_get_the_same_answer(
    http: httpx.AsyncClient, runtime: Runtime, admin: ApiSession, clock: FakeClock
) -> None:
    await runtime.require_opened().accounts.set_password("acme", "alice", PASSWORD, clock())
    user = PageUser(http)
    nobody = await user.sign_in("acme", "nobody", PASSWORD)
    other = await user.sign_in("elsewhere", "alice", PASSWORD)
    assert nobody.status_code == other.status_code == 401
    assert "The workspace, user or password is not right." in nobody.text


async def test_generate_shows_both_values_once_and_they_work(
    alice: PageUser, admin: ApiSession, settings_path: Path | None
) -> None:
    response = await alice.generate("deploy bot", "30")
    assert response.status_code == 200
    values = values_in(response.text)
    assert values["refresh-token"].startswith("apit_rt_")
    assert "cannot be shown again" in response.text
    assert 'data-replace-url="/tokens"' in response.text
    refreshed = await admin.refresh(values["refresh-token"])
    assert refreshed.status_code == 200
    for path in ("/tokens", "/admin/tokens", "/admin/tokens?owner=alice"):
        later = await alice.http.get(path)
        assert "deploy bot" in later.text
        for value in values.values():
            assert value not in later.text
    for cookie in alice.http.cookies.values():
        assert values["refresh-token"] not in cookie
    if settings_path is not None:
        stored = settings_path.read_bytes()
        for value in values.values():
            assert value.encode() not in stored


@pytest.fixture
def settings_path(database_url: str) -> Path | None:
    """The SQLite file (where a value would be found if stored); None on PostgreSQL."""
    if database_url.startswith("sqlite:///"):
        return Path(database_url.removeprefix("sqlite:///"))
    return None


@pytest.mark.parametrize(
    ("name", "days", "field", "message"),
    [
        ("ci", "366", "lifetime-error", "Enter a whole number of days from 1 to 365."),
        ("ci", "0", "lifetime-error", "Enter a whole number of days from 1 to 365."),
        ("ci", "ten", "lifetime-error", "Enter a whole number of days from 1 to 365."),
        ("  ", "30", "name-error", "Enter a name."),
    ],
)
async def test_generate_refuses_bad_input_next_to_the_field(
    alice: PageUser, name: str, days: str, field: str, message: str
) -> None:
    response = await alice.generate(name, days)
    assert response.status_code == 400
    assert f'<p class="error" id="{field}">{message}</p>' in response.text
    assert "data-open" in response.text  # the dialog stays open with the values typed
    assert values_in(response.text) == {}
    assert "No tokens yet." not in response.text  # alice's init token is listed
    assert response.text.count("Actions for ") == 1


async def test_disable_asks_to_confirm_then_says_issued_access_tokens_keep_working(
    alice: PageUser, admin: ApiSession
) -> None:
    created = await admin.create_token("old", 30)
    asked = await alice.post("/tokens/actions", {"action": "disable", "ids": created["id"]})
    assert asked.status_code == 200 and "Disabling is permanent" in asked.text
    assert (await admin.refresh(created["refreshToken"])).status_code == 200  # not yet
    done = await alice.post(
        "/tokens/actions", {"action": "disable", "ids": created["id"], "confirmed": "yes"}
    )
    assert done.status_code == 303
    page = await alice.http.get(done.headers["location"])
    assert "Disabled 1 token." in page.text
    # 300 s access tokens (the fixture's settings): the latest issued expires 12:05.
    assert "keep working until they expire, at the latest 2026-01-05 12:05 UTC" in page.text
    refused = await admin.refresh(created["refreshToken"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_bulk_delete_and_a_members_ids_of_others_are_not_found(
    alice: PageUser, bob: PageUser, admin: ApiSession
) -> None:
    first, second = await admin.create_token("one", 30), await admin.create_token("two", 30)
    # bob cannot act on alice's tokens through his page.
    await bob.post(
        "/tokens/actions", {"action": "delete", "ids": [first["id"]], "confirmed": "yes"}
    )
    assert "one" in (await alice.http.get("/tokens")).text
    done = await alice.post(
        "/tokens/actions",
        {"action": "delete", "ids": [first["id"], second["id"]], "confirmed": "yes"},
    )
    page = await alice.http.get(done.headers["location"])
    assert "Deleted 2 tokens." in page.text
    assert ">one<" not in page.text and ">two<" not in page.text


async def test_a_member_gets_403_on_every_admin_page(bob: PageUser) -> None:
    for path in ("/admin/tokens", "/admin/members"):
        response = await bob.http.get(path)
        assert response.status_code == 403 and "Only workspace admins" in response.text
        assert response.headers["cache-control"] == "no-store"
    for path in ("/admin/tokens/actions", "/admin/members/invite", "/admin/members/remove"):
        assert (await bob.post(path, {"user": "alice", "action": "delete"})).status_code == 403
    assert "Admin: members" not in (await bob.http.get("/tokens")).text


async def test_admin_page_filters_by_owner_and_status(
    alice: PageUser, admin: ApiSession, member: ApiSession
) -> None:
    await member.create_token("bobs", 30)
    gone = await admin.create_token("alices-old", 30)
    await alice.post(
        "/tokens/actions", {"action": "disable", "ids": gone["id"], "confirmed": "yes"}
    )
    everyone = (await alice.http.get("/admin/tokens")).text
    assert (
        "bobs" in everyone and "alices-old" in everyone and '<th scope="col">Owner</th>' in everyone
    )
    only_bob = (await alice.http.get("/admin/tokens?owner=bob")).text
    assert "bobs" in only_bob and "alices-old" not in only_bob
    disabled = (await alice.http.get("/admin/tokens?status=disabled")).text
    assert "alices-old" in disabled and "bobs" not in disabled


async def test_invitation_link_works_once_and_signs_the_new_member_in(
    app: FastAPI, alice: PageUser
) -> None:
    invited = await alice.post("/admin/members/invite", {"user": "carol", "role": "member"})
    assert invited.status_code == 200
    link = re.search(r'<code id="invitation-link">([^<]+)</code>', invited.text)
    assert link is not None
    path = link.group(1).removeprefix(BASE_URL).replace("&amp;", "&")
    assert "carol" not in (await alice.http.get("/admin/members")).text.split("<tbody>")[1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        form = await client.get(path)
        assert form.status_code == 200 and "carol" in form.text
        code = path.split("code=")[1]
        short = await client.post(
            "/invitations/accept",
            data={
                "csrf_token": csrf_of(form.text),
                "code": code,
                "password": "short",
                "confirm": "short",
            },
        )
        assert short.status_code == 400 and "at least 12 characters" in short.text
        accepted = await client.post(
            "/invitations/accept",
            data={
                "csrf_token": csrf_of(form.text),
                "code": code,
                "password": PASSWORD,
                "confirm": PASSWORD,
            },
        )
        assert accepted.status_code == 303
        assert "carol in acme" in (await client.get("/tokens")).text
        again = await client.get(path)
        assert again.status_code == 404
    assert "carol" in (await alice.http.get("/admin/members")).text


async def test_change_role_and_remove(alice: PageUser, bob: PageUser) -> None:
    promoted = await alice.post("/admin/members/role", {"user": "bob", "role": "admin"})
    assert promoted.status_code == 303
    assert (await bob.http.get("/admin/tokens")).status_code == 200
    demote_self = await alice.post("/admin/members/role", {"user": "alice", "role": "member"})
    assert demote_self.status_code == 303  # bob is an admin too now
    assert (await alice.http.get("/admin/members")).status_code == 403
    last = await bob.post("/admin/members/role", {"user": "bob", "role": "member"})
    assert last.status_code == 409 and "last admin" in last.text
    removed = await bob.post("/admin/members/remove", {"user": "alice"})
    assert removed.status_code == 303
    # alice's session ended with her membership.
    assert (await alice.http.get("/tokens")).status_code == 303


async def test_sign_out_ends_the_session_on_the_server(alice: PageUser) -> None:
    stolen = dict(alice.http.cookies)
    out = await alice.post("/signout", {})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    alice.http.cookies.update(stolen)
    assert (await alice.http.get("/tokens")).status_code == 303
