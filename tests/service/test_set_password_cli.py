"""`apitoken-service set-password` and `init --password-stdin`: the password comes from
standard input only, and the pages accept it."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from support.pages import csrf_of
from support.tokenservice import SERVICE_BIN, RunningTokenService

pytestmark = pytest.mark.service

PASSWORD = "a long enough password"


def _sign_in(base_url: str, user: str, password: str) -> int:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        form = client.get("/signin")
        response = client.post(
            "/signin",
            data={
                "csrf_token": csrf_of(form.text),
                "workspace": "acme",
                "user": user,
                "password": password,
            },
        )
        return response.status_code


def test_set_password_reads_stdin_and_refuses_short_ones_and_non_members(
    token_service: RunningTokenService,
) -> None:
    base = ("set-password", "--workspace", "acme")
    assert _sign_in(token_service.base_url, "admin", PASSWORD) == 401
    short = token_service.cli(*base, "--user", "admin", stdin="short\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    nobody = token_service.cli(*base, "--user", "nobody", stdin=PASSWORD + "\n")
    assert nobody.returncode == 1 and "not a member" in nobody.stderr
    done = token_service.cli(*base, "--user", "admin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert _sign_in(token_service.base_url, "admin", PASSWORD) == 303
    assert PASSWORD.encode() not in token_service.database_path.read_bytes()


def test_init_password_stdin_sets_the_admins_password(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/db"
    done = subprocess.run(
        [
            str(SERVICE_BIN),
            "init",
            "--database",
            database,
            "--workspace",
            "acme",
            "--admin",
            "alice",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check = subprocess.run(
        [
            str(SERVICE_BIN),
            "set-password",
            "--database",
            database,
            "--workspace",
            "acme",
            "--user",
            "alice",
        ],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1  # the database and alice exist; only the password was short
    row = (
        sqlite3.connect(f"{tmp_path}/db")
        .execute("select hash from passwords where user_name = 'alice'")
        .fetchone()
    )
    assert row is not None and row[0].startswith("$argon2id$")
