"""`apitokenctl` against a real `apitoken-service serve`: every command and exit code."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.service

CTL = Path(sys.executable).with_name("apitokenctl")


class Ctl:
    def __init__(self, service: RunningTokenService, config: Path) -> None:
        self.service = service
        self.env = {**os.environ, "APITOKENCTL_CONFIG": str(config)}

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CTL), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self.env,
        )

    def json(self, *args: str) -> Any:
        done = self.run(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def ctl(token_service: RunningTokenService, tmp_path: Path) -> Ctl:
    return Ctl(token_service, tmp_path / "cfg" / "apitokenctl" / "credential.json")


def _login(ctl: Ctl, refresh: str) -> subprocess.CompletedProcess[str]:
    return ctl.run(
        "login", "--url", ctl.service.base_url, "--workspace", "acme", "-o", "json", stdin=refresh
    )


def test_not_signed_in_is_exit_3_and_bad_usage_exit_2(ctl: Ctl) -> None:
    done = ctl.run("tokens", "list")
    assert done.returncode == 3 and "not signed in" in done.stderr
    assert ctl.run("tokens", "generate", "--name", "x").returncode == 2
    assert ctl.run("tokens", "list", "--status", "gone").returncode == 2
    rejected = _login(ctl, "apit_rt_" + "x" * 40)
    assert rejected.returncode == 3 and "rejected" in rejected.stderr


def test_login_keeps_a_rotating_credential_in_a_0600_file(ctl: Ctl, tmp_path: Path) -> None:
    original = ctl.service.credential["refreshToken"]
    done = _login(ctl, original + "\n")
    assert done.returncode == 0, done.stderr
    assert original not in done.stdout + done.stderr
    config = Path(ctl.env["APITOKENCTL_CONFIG"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    first = json.loads(config.read_text())["refresh_token"]
    assert first != original  # rotated at login
    ctl.json("tokens", "list")
    assert json.loads(config.read_text())["refresh_token"] != first  # and on every command
    # Signing in from a file works the same way; the value is never an argument.
    stored = tmp_path / "rt"
    generated = ctl.json("tokens", "generate", "--name", "for-file", "--lifetime-days", "2")
    stored.write_text(generated["refreshToken"])
    again = ctl.run(
        "login",
        "--url",
        ctl.service.base_url,
        "--workspace",
        "acme",
        "--refresh-token-file",
        str(stored),
    )
    assert again.returncode == 0, again.stderr


def test_tokens_generate_list_disable_delete(ctl: Ctl) -> None:
    assert _login(ctl, ctl.service.credential["refreshToken"]).returncode == 0
    created = ctl.json("tokens", "generate", "--name", "ci", "--lifetime-days", "30")
    assert created["refreshToken"].startswith("apit_rt_") and created["accessToken"]
    table = ctl.run("tokens", "list", "-o", "table")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "OWNER"]
    assert (
        created["refreshToken"] not in table.stdout and created["accessToken"] not in table.stdout
    )
    refused = ctl.run("tokens", "generate", "--name", "ci", "--lifetime-days", "366")
    assert refused.returncode == 1 and "lifetimeDays" in refused.stderr
    listed = ctl.json("tokens", "list", "--status", "active")
    assert created["id"] in {t["id"] for t in listed}
    assert all("refreshToken" not in t for t in listed)

    disabled = ctl.run("tokens", "disable", created["id"], "tk_missing", "-o", "table")
    assert disabled.returncode == 1
    lines = disabled.stdout.splitlines()
    assert lines[1].split() == [created["id"], "disabled"]
    assert lines[2].split() == ["tk_missing", "notFound"]
    assert created["id"] in {t["id"] for t in ctl.json("tokens", "list", "--status", "disabled")}
    deleted = ctl.json("tokens", "delete", created["id"])
    assert deleted["results"] == [{"id": created["id"], "ok": True, "result": "deleted"}]


def test_secret_manifest_holds_the_refresh_token_for_refresh_only_mode(ctl: Ctl) -> None:
    assert _login(ctl, ctl.service.credential["refreshToken"]).returncode == 0
    done = ctl.run(
        "tokens", "generate", "--name", "m", "--lifetime-days", "5", "--secret-manifest", "my-rt"
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["kind"] == "Secret" and manifest["metadata"]["name"] == "my-rt"
    assert manifest["stringData"]["refresh_token"].startswith("apit_rt_")
    assert "accessToken" not in done.stdout


def test_members_list_add_remove_and_a_member_is_refused(ctl: Ctl, tmp_path: Path) -> None:
    assert _login(ctl, ctl.service.credential["refreshToken"]).returncode == 0
    added = ctl.json("members", "add", "bob")
    assert added["user"] == "bob" and added["role"] == "member"
    assert {m["user"] for m in ctl.json("members", "list")} == {"admin", "bob"}
    bob = Ctl(ctl.service, tmp_path / "bob.json")
    assert _login(bob, added["refreshToken"]).returncode == 0
    assert bob.run("members", "list").returncode == 1
    assert bob.run("tokens", "list", "--all-members").returncode == 1
    everyone = ctl.json("tokens", "list", "--all-members")
    assert {t["owner"] for t in everyone} == {"admin", "bob"}
    assert {t["owner"] for t in ctl.json("tokens", "list", "--owner", "bob")} == {"bob"}
    removed = ctl.run("members", "remove", "bob")
    assert removed.returncode == 0
    assert bob.run("tokens", "list").returncode == 3  # bob's credential died with him
    assert ctl.run("members", "remove", "bob").returncode == 1
