"""The PostgreSQL test harness gives each test a real, empty database of its own, and its server
does not outlive the test process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

pytestmark = pytest.mark.service


async def _fetch_column(url: str, sql: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [str(row[0]) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


async def _tables(url: str) -> list[str]:
    return await _fetch_column(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )


async def _database_names(url: str) -> list[str]:
    return await _fetch_column(url, "SELECT datname FROM pg_database")


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def test_database_url_is_a_fresh_loopback_database(postgres_database_url: str) -> None:
    parts = urlsplit(postgres_database_url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "127.0.0.1"
    assert parts.username == "postgres"
    assert await _tables(postgres_database_url) == []

    connection = await asyncpg.connect(postgres_database_url)
    try:
        await connection.execute("CREATE TABLE token (id text PRIMARY KEY, name text NOT NULL)")
        await connection.execute("INSERT INTO token VALUES ('a', 'first')")
        assert await connection.fetchval("SELECT name FROM token WHERE id = 'a'") == "first"
    finally:
        await connection.close()
    assert await _tables(postgres_database_url) == ["token"]


async def test_two_databases_are_isolated_and_dropped_afterwards(
    postgres_database_url: str,
    postgres_new_database: Callable[[str], AbstractContextManager[str]],
) -> None:
    with postgres_new_database("second") as other_url:
        assert _name(other_url) != _name(postgres_database_url)
        connection = await asyncpg.connect(other_url)
        try:
            await connection.execute("CREATE TABLE only_here (x int)")
        finally:
            await connection.close()

        assert await _tables(other_url) == ["only_here"]
        assert await _tables(postgres_database_url) == []
        assert _name(other_url) in await _database_names(postgres_database_url)

    assert _name(other_url) not in await _database_names(postgres_database_url)


_HOLD_A_SERVER = """
import sys, time
from support.postgres import running_postgres
with running_postgres() as server:
    print(server.root, server.port, flush=True)
    time.sleep(600)
"""


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None once it is gone or a zombie:
    a PID and its start time name one process even if the PID is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_server_dies_with_a_sigkilled_test_process() -> None:
    """An interrupted run (the test process SIGKILLed) leaves no PostgreSQL server behind and
    no data folder: the server's watchdog sees the end of its pipe."""
    tests_dir = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_SERVER],
        cwd=tests_dir.parent,
        env={**os.environ, "PYTHONPATH": str(tests_dir)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        root_text, port_text = holder.stdout.readline().split()
        root, port = Path(root_text), int(port_text)
        postmaster = int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
        # A short-lived child (a backend of the harness's own connection, a startup process)
        # may end between the listing and the read: only the ones still running are watched.
        started = {
            pid: start
            for pid in [postmaster, *_children(postmaster)]
            if (start := _start_time(pid)) is not None
        }
        server_processes = list(started)
        assert postmaster in started and _accepts_connections(port)
        assert len(server_processes) > 1, "postgres runs its background processes"

        holder.kill()
        holder.wait(timeout=10)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = [pid for pid in server_processes if _start_time(pid) == started[pid]]
            if not left and not root.exists():
                break
            time.sleep(0.1)
        assert left == [], f"postgres processes outlived their test process: {left}"
        assert not _accepts_connections(port)
        assert not root.exists(), "the server's data folder is removed"
    finally:
        holder.kill()
        holder.wait(timeout=10)
