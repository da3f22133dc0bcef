"""The token endpoint's fast path: one interface over the two databases' own drivers.

The token endpoint's statements (refresh_sql.py) run past SQLAlchemy's engine, whose per-execute
work costs more than the statement itself: on SQLite on the event loop's thread with group
commit (sqlite_direct.py), on PostgreSQL on a few asyncpg connections with batched rotations
(pg_direct.py). SqlStorage calls both through this interface and never asks which one it has.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.sql import Select, Update

Statement = Select[*tuple[Any, ...]] | Update
Row = tuple[Any, ...]


class FastPath(Protocol):
    async def first(self, statement: Statement, params: dict[str, Any]) -> Row | None:
        """The first row of a prebuilt statement (positional, in its column order)."""

    async def write(self, statement: Statement, params: dict[str, Any]) -> int:
        """Run a prebuilt write without RETURNING; the number of rows it changed."""

    async def rotate(self, presented: bytes, successor: bytes, now_ms: int) -> Row | None:
        """refresh_sql.ROTATE, committed together with the other rotations of this loop
        iteration; its RETURNING row, None when it matched nothing."""

    async def ping(self) -> None:
        """Raise unless the database answers on this path (/readyz)."""

    async def close(self) -> None: ...
