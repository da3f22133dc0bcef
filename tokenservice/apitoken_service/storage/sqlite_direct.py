"""The token endpoint's SQLite statements on one connection on the event loop's thread.

A local SQLite statement takes microseconds, while aiosqlite's hand-off to its worker thread and
back, and SQLAlchemy's per-execute work, cost far more (measured: about 8 ms per refresh on a
busy 2-core machine, against well under 1 ms this way). Two things keep the loop from waiting on
the disk:

- Group commit: the rotating writes of one loop iteration (every refresh whose request arrived
  together) run in one transaction, so a busy service commits once per batch instead of once
  per refresh. Each write is still its own conditional statement with its own result.
- Checkpoints (copying the WAL back into the database file, with an fsync) run in a thread of
  their own; left to the loop's connection, they stalled every request behind them.

Writers in other processes are waited for by SQLite's busy timeout, which stays short: their
transactions are single statements or one small batch. If a constraint refuses one statement of a
batch, the statements run again one by one; any other error fails the whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import Select, Update

log = logging.getLogger("apitoken_service.storage")

_NAMED_SQLITE = sqlite_dialect.dialect(paramstyle="named")
# The loop's connection still checkpoints if the thread falls this far behind (pages of 4 KiB).
_LOOP_AUTOCHECKPOINT_PAGES = 20_000
CHECKPOINT_INTERVAL_S = 0.25
# A bound on one transaction, so that other processes' writers wait briefly.
_MAX_BATCH = 256

Statement = Select[*tuple[Any, ...]] | Update
Row = tuple[Any, ...]


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; synchronous=NORMAL is the usual WAL setting
    # (a power cut can lose the last commits, never corrupt the file).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class _Checkpointer:
    """Passive WAL checkpoints every CHECKPOINT_INTERVAL_S on a connection of its own; the
    sqlite3 module releases the GIL while SQLite works, so the event loop runs meanwhile."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    # The loop's connection checkpoints on its own past a bound; try again.
                    log.warning("WAL checkpoint failed", extra={"error": type(exc).__name__})
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class DirectSqlite:
    """The token endpoint's statements (compiled once from Core statements) on one synchronous
    connection, in autocommit, except the grouped writes (`write_returning`)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        sqlite_pragmas(self._conn, None)
        self._conn.execute(f"PRAGMA wal_autocheckpoint={_LOOP_AUTOCHECKPOINT_PAGES}")
        self._checkpointer = _Checkpointer(path)
        self._sql: dict[int, tuple[str, dict[str, Any]]] = {}
        self._pending: list[tuple[str, dict[str, Any], asyncio.Future[Row | None]]] = []
        self._flush_scheduled = False

    def _compiled(self, statement: Statement, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        found = self._sql.get(id(statement))
        if found is None:
            compiled = statement.compile(dialect=_NAMED_SQLITE)
            # Literal values in the statement (status = 'active') are bound parameters too.
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            found = self._sql[id(statement)] = (str(compiled), defaults)
        sql, defaults = found
        return sql, {**defaults, **params}

    def _one(self, sql: str, params: dict[str, Any]) -> Row | None:
        # fetchall: a statement with RETURNING is done (and its change made) only once it has
        # run to completion.
        rows: list[Row] = self._conn.execute(sql, params).fetchall()
        return rows[0] if rows else None

    async def first(self, statement: Statement, params: dict[str, Any]) -> Row | None:
        return self._one(*self._compiled(statement, params))

    async def write(self, statement: Statement, params: dict[str, Any]) -> int:
        return self._conn.execute(*self._compiled(statement, params)).rowcount

    async def write_returning(self, statement: Statement, params: dict[str, Any]) -> Row | None:
        """A write with RETURNING, committed together with the others of this loop iteration;
        the first row it returned once the batch is committed."""
        sql, merged = self._compiled(statement, params)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Row | None] = loop.create_future()
        self._pending.append((sql, merged, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After the callbacks already queued: the other requests of this iteration.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        self._flush_scheduled = bool(self._pending)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        for (_sql, _params, future), outcome in zip(batch, self._run(batch), strict=True):
            if future.cancelled():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _run(
        self, batch: list[tuple[str, dict[str, Any], asyncio.Future[Row | None]]]
    ) -> list[Row | Exception | None]:
        if len(batch) > 1:
            try:
                self._conn.execute("BEGIN")
                rows = [self._one(sql, params) for sql, params, _ in batch]
                self._conn.execute("COMMIT")
                return list(rows)
            except sqlite3.IntegrityError:
                # A constraint refused one statement; nothing of the batch was kept. Each
                # statement again on its own, so that the failure belongs to its request alone.
                self._rollback()
            except Exception as exc:
                # Locked, I/O error, ...: it would fail each statement alike; no retries (each
                # would wait out the busy timeout again).
                self._rollback()
                return [exc] * len(batch)
        outcomes: list[Row | Exception | None] = []
        for sql, params, _ in batch:
            try:
                outcomes.append(self._one(sql, params))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        self._checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()
