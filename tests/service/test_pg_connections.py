"""The token endpoint's few PostgreSQL connections: bounded, shared fairly, never leaked."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from apitoken_service.storage.pg_connections import PgConnections

pytestmark = pytest.mark.service


async def _backends(connections: PgConnections) -> int:
    row = await connections.fetchrow(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    )
    return int(row[0])


async def test_many_statements_share_at_most_size_connections(
    postgres_database_url: str,
) -> None:
    connections = PgConnections(postgres_database_url, size=2)
    try:
        rows = await asyncio.gather(
            *(connections.fetchrow("SELECT $1::int, pg_sleep(0.01)", i) for i in range(20))
        )
        assert [row[0] for row in rows] == list(range(20))
        assert await _backends(connections) == 2
        assert await connections.execute("SELECT 1") == "SELECT 1"
    finally:
        await connections.close()


async def test_cancelled_and_failed_statements_give_their_connection_back(
    postgres_database_url: str,
) -> None:
    connections = PgConnections(postgres_database_url, size=1)
    try:
        slow = asyncio.create_task(connections.fetchrow("SELECT pg_sleep(5)"))
        waiting = asyncio.create_task(connections.fetchrow("SELECT 1"))
        await asyncio.sleep(0.2)
        for task in (slow, waiting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with pytest.raises(Exception, match="division by zero"):
            await connections.fetchrow("SELECT 1 / 0")

        row = await asyncio.wait_for(connections.fetchrow("SELECT 42"), timeout=10)

        assert row[0] == 42
    finally:
        await connections.close()


async def test_a_connection_the_server_closed_is_replaced_before_a_statement(
    postgres_database_url: str,
) -> None:
    """What a PostgreSQL restart does to idle connections (issue 9 item 10)."""
    connections = PgConnections(postgres_database_url, size=1)
    killer = PgConnections(postgres_database_url, size=1)
    try:
        pid = (await connections.fetchrow("SELECT pg_backend_pid()"))[0]
        await killer.execute(f"SELECT pg_terminate_backend({int(pid)})")
        for _ in range(50):  # until asyncpg has seen the socket end
            await asyncio.sleep(0.02)
        row = await connections.fetchrow("SELECT pg_backend_pid()")
        assert row[0] != pid
    finally:
        await connections.close()
        await killer.close()
