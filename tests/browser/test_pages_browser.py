"""The pages in a real browser: the whole Generate, copy, Close, reload, Disable, Delete flow
(checked against the token endpoint), bulk actions, the admin filter and 403, an invitation
accepted in a second browser context, CSRF refusal and the sign-in lockout. Afterwards no
token value is in the service's log or database."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from support.tokenservice import RunningTokenService

from .conftest import PASSWORD, Screens, sign_in

pytestmark = pytest.mark.browser


def _refresh(service: RunningTokenService, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        timeout=10,
    )


def _stored_bytes(service: RunningTokenService) -> bytes:
    folder = service.database_path.parent
    files = [p for p in folder.iterdir() if p.name.startswith(service.database_path.name)]
    return b"".join(p.read_bytes() for p in files)


def _assert_nowhere(service: RunningTokenService, values: list[str]) -> None:
    log = service.log_path.read_text()
    stored = _stored_bytes(service)
    for value in values:
        assert value not in log
        assert value.encode() not in stored


def _generate(page: Page, name: str, days: str) -> None:
    page.get_by_role("button", name="Generate", exact=True).first.click()
    dialog = page.get_by_role("dialog", name="Generate a token")
    expect(dialog.get_by_label("Name")).to_be_focused()
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Lifetime (days)").fill(days)
    dialog.get_by_role("button", name="Generate").click()


def _generated_values(page: Page) -> tuple[str, str]:
    dialog = page.get_by_role("dialog", name=re.compile("generated"))
    expect(dialog).to_be_visible()
    access = dialog.locator("#access-token").inner_text()
    refresh = dialog.locator("#refresh-token").inner_text()
    return access, refresh


def _act(page: Page, name: str, action: str) -> None:
    page.get_by_label(f"Actions for {name}").click()
    row = page.get_by_role("row").filter(has_text=name)
    row.get_by_role("button", name=action, exact=True).click()


def test_generate_copy_close_reload_back_disable_delete(
    browser: Browser, service: RunningTokenService, screens: Screens
) -> None:
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.base_url)
    page = context.new_page()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    sign_in(page, service.base_url, "admin")
    expect(page.get_by_role("heading", name="OAuth 2.0 API Tokens")).to_be_visible()
    expect(page.locator("#token-endpoint")).to_have_text(f"{service.base_url}/oauth2/token")
    expect(page.locator("#client-id")).to_have_text("acme")
    screens.shot(page, "signed-in")

    # 366 days: refused in the page, next to the field, and nothing is sent.
    before = len(posts)
    _generate(page, "deploy", "366")
    error = page.locator("#lifetime-error")
    expect(error).to_have_text("Enter a whole number of days from 1 to 365.")
    expect(page.get_by_label("Lifetime (days)")).to_be_focused()
    expect(page.get_by_label("Lifetime (days)")).to_have_attribute("aria-invalid", "true")
    assert len(posts) == before
    screens.shot(page, "lifetime-refused")

    dialog = page.get_by_role("dialog", name="Generate a token")
    dialog.get_by_label("Lifetime (days)").fill("30")
    dialog.get_by_role("button", name="Generate").click()
    access, refresh = _generated_values(page)
    assert refresh.startswith("apit_rt_") and access.count(".") == 2
    expect(page.get_by_text("cannot be shown again")).to_be_visible()
    page.get_by_role("button", name="Copy Refresh Token").click()
    expect(page.locator("#copy-status")).to_have_text("Refresh Token copied.")
    assert page.evaluate("navigator.clipboard.readText()") == refresh
    page.get_by_role("button", name="Copy Access Token").click()
    assert page.evaluate("navigator.clipboard.readText()") == access
    screens.shot(page, "values-shown-once")

    # The refresh token works at the token endpoint (and rotates).
    granted = _refresh(service, refresh)
    assert granted.status_code == 200, granted.text
    rotated = granted.json()["refresh_token"]

    page.get_by_role("button", name="Close").click()
    expect(page).to_have_url(re.compile(re.escape(f"{service.base_url}/tokens") + r"\??$"))
    for step in ("closed", "reloaded", "back"):
        if step == "reloaded":
            page.reload()
        elif step == "back":
            page.go_back()
            page.wait_for_load_state()
        content = page.content()
        assert access not in content and refresh not in content, step
        assert "cannot be shown again" not in content, step
    screens.shot(page, "after-close-reload-back")
    page.goto(f"{service.base_url}/tokens")
    expect(page.get_by_role("cell", name="deploy", exact=True)).to_be_visible()

    # Disable: a confirmation that says it is permanent, then the note on access tokens.
    _act(page, "deploy", "Disable")
    expect(page.get_by_text("Disabling is permanent")).to_be_visible()
    screens.shot(page, "confirm-disable")
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#notice")).to_contain_text(
        "Access tokens already issued keep working until they expire, at the latest"
    )
    expect(page.get_by_role("row").filter(has_text="deploy")).to_contain_text("disabled")
    screens.shot(page, "disabled")
    died = _refresh(service, rotated)
    assert died.status_code == 400 and died.json()["error"] == "invalid_grant"

    _act(page, "deploy", "Delete")
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("#notice")).to_contain_text("Deleted 1 token.")
    expect(page.get_by_role("cell", name="deploy", exact=True)).to_have_count(0)

    # Reloading while the values are shown loads the list, and generates nothing again.
    _generate(page, "reloaded", "3")
    shown = _generated_values(page)
    page.reload()
    content = page.content()
    assert shown[0] not in content and shown[1] not in content
    expect(page.get_by_role("cell", name="reloaded", exact=True)).to_have_count(1)
    _act(page, "reloaded", "Delete")
    page.get_by_role("button", name="Delete").click()

    # Bulk: two tokens selected, disabled together, then deleted together.
    values = [access, refresh, rotated, *shown]
    for name in ("batch-a", "batch-b"):
        _generate(page, name, "7")
        values.extend(_generated_values(page))
        page.get_by_role("button", name="Close").click()
    page.get_by_label("Select batch-a").check()
    page.get_by_label("Select batch-b").check()
    page.get_by_role("button", name="Disable selected").click()
    expect(page.get_by_role("heading", name="Disable 2 tokens?")).to_be_visible()
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#notice")).to_contain_text("Disabled 2 tokens.")
    page.get_by_label("Select batch-a").check()
    page.get_by_label("Select batch-b").check()
    page.get_by_role("button", name="Delete selected").click()
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("#notice")).to_contain_text("Deleted 2 tokens.")
    expect(page.get_by_role("cell", name="batch-a", exact=True)).to_have_count(0)
    screens.shot(page, "bulk-deleted")
    context.close()
    _assert_nowhere(service, values)


def test_invitation_admin_filter_and_member_refused(
    browser: Browser, service: RunningTokenService, screens: Screens
) -> None:
    admin_context = browser.new_context()
    admin = admin_context.new_page()
    sign_in(admin, service.base_url, "admin")
    admin.get_by_role("link", name="Admin: members").click()
    admin.get_by_label("User", exact=True).fill("carol")
    admin.get_by_role("button", name="Invite").click()
    link = admin.locator("#invitation-link").inner_text()
    assert link.startswith(f"{service.base_url}/invitations/accept?code=")
    screens.shot(admin, "invited")

    # carol, in a browser context of her own, accepts and is signed in.
    carol_context = browser.new_context()
    carol = carol_context.new_page()
    carol.goto(link)
    expect(carol.get_by_role("heading", name="Join acme")).to_be_visible()
    carol.get_by_label("Password", exact=True).fill(PASSWORD)
    carol.get_by_label("Repeat the password").fill(PASSWORD)
    carol.get_by_role("button", name="Accept the invitation").click()
    expect(carol.get_by_text("carol in acme")).to_be_visible()
    _generate(carol, "carols-token", "10")
    values = list(_generated_values(carol))
    carol.get_by_role("button", name="Close").click()
    screens.shot(carol, "carol-signed-in")

    # The link works once.
    other = browser.new_context().new_page()
    other.goto(link)
    expect(other.get_by_role("heading", name="Invitation not valid")).to_be_visible()

    # A member opening an admin page gets 403.
    response = carol.goto(f"{service.base_url}/admin/tokens")
    assert response is not None and response.status == 403
    expect(carol.get_by_text("Only workspace admins can open this page.")).to_be_visible()

    # The admin page: Owner column, filter by owner, then by status; bulk disable.
    admin.goto(f"{service.base_url}/admin/tokens")
    expect(admin.get_by_role("columnheader", name="Owner")).to_be_visible()
    expect(admin.get_by_role("cell", name="init", exact=True)).to_be_visible()
    admin.get_by_label("Owner").select_option("carol")
    admin.get_by_role("button", name="Filter").click()
    expect(admin.get_by_role("cell", name="carols-token", exact=True)).to_be_visible()
    expect(admin.get_by_role("cell", name="init", exact=True)).to_have_count(0)
    screens.shot(admin, "filtered-by-owner")
    admin.get_by_label("Select carols-token").check()
    admin.get_by_role("button", name="Disable selected").click()
    admin.get_by_role("button", name="Disable").click()
    expect(admin.locator("#notice")).to_contain_text("Disabled 1 token.")
    admin.get_by_label("Status").select_option("active")
    admin.get_by_label("Owner").select_option("")
    admin.get_by_role("button", name="Filter").click()
    expect(admin.get_by_role("cell", name="carols-token", exact=True)).to_have_count(0)
    expect(admin.get_by_role("cell", name="init", exact=True)).to_be_visible()
    admin.get_by_label("Status").select_option("disabled")
    admin.get_by_role("button", name="Filter").click()
    expect(admin.get_by_role("cell", name="carols-token", exact=True)).to_be_visible()
    screens.shot(admin, "filtered-by-status")
    assert _refresh(service, values[1]).status_code == 400
    for context in (admin_context, carol_context):
        context.close()
    # Nor the invitation code or a password (only their hashes are stored).
    _assert_nowhere(service, [*values, link.split("code=")[1], PASSWORD])


def test_csrf_refused_and_sign_in_lockout(
    browser: Browser, service: RunningTokenService, screens: Screens
) -> None:
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, service.base_url, "admin")
    # A form whose CSRF token was tampered with is refused and changes nothing.
    page.get_by_role("button", name="Generate", exact=True).first.click()
    page.evaluate(
        "document.querySelector('#generate-form input[name=csrf_token]').value = 'forged'"
    )
    page.get_by_label("Name").fill("forged")
    page.get_by_label("Lifetime (days)").fill("5")
    page.get_by_role("dialog").get_by_role("button", name="Generate").click()
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    screens.shot(page, "csrf-refused")
    page.goto(f"{service.base_url}/tokens")
    expect(page.get_by_role("cell", name="forged", exact=True)).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    for _ in range(5):
        sign_in(page, service.base_url, "admin", "wrong password!")
        expect(page.get_by_role("alert")).to_have_text(
            "The workspace, user or password is not right."
        )
    sign_in(page, service.base_url, "admin", "wrong password!")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    sign_in(page, service.base_url, "admin")  # right password, still locked
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins")
    screens.shot(page, "locked")
    context.close()


def test_artifacts_folder_is_ignored_by_git() -> None:
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text()
    assert "/test-artifacts/" in ignored


def test_keyboard_dialog_and_menu_take_and_return_focus(
    browser: Browser, service: RunningTokenService, screens: Screens
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    sign_in(page, service.base_url, "admin")
    generate = page.get_by_role("button", name="Generate", exact=True).first
    generate.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="Generate a token").get_by_label("Name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Generate a token")).to_be_hidden()
    expect(generate).to_be_focused()
    menu = page.get_by_label("Actions for init")
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    row = page.get_by_role("row").filter(has_text="init")
    expect(row.get_by_role("button", name="Disable", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_focused()
    expect(row.get_by_role("button", name="Disable", exact=True)).to_be_hidden()
    # Nothing wider than the phone's screen but the table, which scrolls inside its box.
    widths = page.evaluate(
        "[document.documentElement.clientWidth, document.documentElement.scrollWidth]"
    )
    assert widths[1] <= widths[0], widths
    screens.shot(page, "phone")
    context.close()
