"""The PostgreSQL test harness gives each test a real, empty database of its own."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
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
