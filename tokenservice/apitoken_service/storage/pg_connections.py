"""A few asyncpg connections, each lent to one statement at a time: the token endpoint's pool.

asyncpg's own Pool costs about as much CPU per statement as the round trip itself (measured
on uvloop: 165 µs against 80 µs per `fetchrow`; its release shields a task and runs reset
hooks). The token endpoint runs single autocommitted statements that leave no session state
behind, so lending a connection needs no more than a list of idle ones and a queue of waiters.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information


class PgConnections:
    """At most `size` connections, opened on demand and kept open."""

    def __init__(self, dsn: str, size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._idle: list[asyncpg.Connection] = []
        self._opened = 0
        # Each waiter gets a connection, or None: a slot came free, open a new one.
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._closed = False

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        conn = await self._checkout()
        try:
            row = await conn.fetchrow(sql, *args)
        except BaseException:
            # Cancelled or failed mid-statement: the connection's state is unknown; drop it.
            self._discard(conn)
            raise
        self._release(conn)
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self._checkout()
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return rows

    async def execute(self, sql: str, *args: Any) -> str:
        conn = await self._checkout()
        try:
            status: str = await conn.execute(sql, *args)
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return status

    async def _checkout(self) -> asyncpg.Connection:
        """An open connection. One the server closed while it was idle (a PostgreSQL restart:
        asyncpg saw the socket end) is replaced here, before any statement is sent on it, so a
        restart costs no request an error once the server is back."""
        while True:
            conn = self._idle.pop() if self._idle else await self._acquire()
            if not conn.is_closed():
                return conn
            self._discard(conn)

    async def _acquire(self) -> asyncpg.Connection:
        while True:
            if self._closed:
                raise RuntimeError("the connections are closed")
            if self._idle:
                return self._idle.pop()
            if self._opened < self._size:
                self._opened += 1
                try:
                    return await asyncpg.connect(self._dsn)
                except BaseException:
                    self._opened -= 1
                    self._wake_one(None)
                    raise
            waiter: asyncio.Future[asyncpg.Connection | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                # Handed a connection just as this request was cancelled: pass it on.
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._wake_one(None)
                raise
            if conn is not None:
                return conn

    def _release(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn.is_closed():
            self._discard(conn)
        elif not self._wake_one(conn):
            self._idle.append(conn)

    def _discard(self, conn: asyncpg.Connection) -> None:
        self._opened -= 1
        conn.terminate()
        self._wake_one(None)

    def _wake_one(self, conn: asyncpg.Connection | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            await conn.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the connections are closed"))
