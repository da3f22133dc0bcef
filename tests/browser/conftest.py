"""Debian's Chromium driven by Playwright for Python against `apitoken-service serve` on
loopback. Playwright's own browser download is never used: `make test` installs Chromium from
Debian (`make chromium`) and the tests launch /usr/bin/chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from support.tokenservice import RunningTokenService, start_token_service

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# this machine's closed network refuses (docs/development.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningTokenService]:
    """A real service with admin `admin` of `acme`, whose page password is set through the
    CLI (standard input, as documented)."""
    with start_token_service(tmp_path / "tokenservice", access_token_ttl=600) as running:
        done = running.cli(
            "set-password", "--workspace", "acme", "--user", "admin", stdin=PASSWORD + "\n"
        )
        assert done.returncode == 0, done.stderr
        yield running


class Screens:
    """Screenshots kept under test-artifacts/browser/ (CI keeps that folder)."""

    def __init__(self, name: str) -> None:
        self.folder = ARTIFACTS / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def shot(self, page: Page, label: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{label}.png"), full_page=True)


@pytest.fixture
def screens(request: pytest.FixtureRequest) -> Screens:
    return Screens(request.node.name)


def sign_in(page: Page, base_url: str, user: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/signin")
    page.get_by_label("Workspace").fill("acme")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
