"""SQLite's fast path (fast_path.py): the token endpoint's statements on the event loop's thread.

A local SQLite statement takes microseconds, while aiosqlite's hand-off to its worker thread and
back, and SQLAlchemy's per-execute work, cost far more (measured: about 8 ms per refresh on a
busy 2-core machine, against well under 1 ms this way). Three things keep the loop from waiting
on the disk or on other processes:

- Group commit: the writes of one loop iteration (every refresh whose request arrived together)
  run in one transaction, so a busy service commits once per batch instead of once per
  refresh. Each write is still its own conditional statement with its own result; one that a
  constraint refuses fails alone (SQLite undoes that statement only).
- No sleeping on the write lock: the writing connection has no busy timeout. When another
  process (another `--workers` process, the management API's pool) holds the lock, the batch is
  tried again after a fraction of a millisecond while the loop serves other requests; SQLite's
  own busy handler would sleep on the loop's thread, stalling every request of the process.
- Checkpoints (copying the WAL back into the database file, with an fsync) run in a thread of
  their own; left to the loop's connection, they stalled every request behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect

from apitoken_service.storage.fast_path import Row, Statement
from apitoken_service.storage.refresh_sql import ROTATE

log = logging.getLogger("apitoken_service.storage")

_NAMED_SQLITE = sqlite_dialect.dialect(paramstyle="named")
# The loop's connection still checkpoints if the thread falls this far behind (pages of 4 KiB).
_LOOP_AUTOCHECKPOINT_PAGES = 20_000
CHECKPOINT_INTERVAL_S = 0.25
# A bound on one transaction, so that other processes' writers wait briefly.
_MAX_BATCH = 256
# While another process holds the write lock: retry after 0.2 ms, doubling up to 5 ms, for at
# most as long as other connections' busy timeout.
_FIRST_RETRY_S = 0.0002
_MAX_RETRY_S = 0.005
_BUSY_TIMEOUT_S = 5.0


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


class _Busy(Exception):
    """Another process holds SQLite's write lock."""


def _is_busy(exc: sqlite3.Error) -> bool:
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


_Pending = tuple[str, dict[str, Any], bool, "asyncio.Future[Any]"]


class DirectSqlite:
    """The token endpoint's statements (compiled once from Core statements) on two synchronous
    connections: reads in autocommit on one, and every write on the other, grouped per loop
    iteration and never waiting for the write lock on the loop (see `_flush`)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        sqlite_pragmas(self._conn, None)
        # The writer never lets SQLite sleep for a lock on the event loop's thread: when another
        # process holds it, the batch is tried again a little later, and the loop serves others.
        self._writer = sqlite3.connect(
            path, timeout=0, isolation_level=None, check_same_thread=False
        )
        sqlite_pragmas(self._writer, None)
        self._writer.execute("PRAGMA busy_timeout=0")
        self._writer.execute(f"PRAGMA wal_autocheckpoint={_LOOP_AUTOCHECKPOINT_PAGES}")
        self._checkpointer = _Checkpointer(path)
        self._sql: dict[int, tuple[str, dict[str, Any]]] = {}
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._busy_since: float | None = None
        self._busy_delay = _FIRST_RETRY_S

    def _compiled(self, statement: Statement, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        found = self._sql.get(id(statement))
        if found is None:
            compiled = statement.compile(dialect=_NAMED_SQLITE)
            # Literal values in the statement (status = 'active') are bound parameters too.
            defaults = {k: v for k, v in compiled.params.items() if v is not None}
            found = self._sql[id(statement)] = (str(compiled), defaults)
        sql, defaults = found
        return sql, {**defaults, **params}

    async def first(self, statement: Statement, params: dict[str, Any]) -> Row | None:
        rows: list[Row] = self._conn.execute(*self._compiled(statement, params)).fetchall()
        return rows[0] if rows else None

    async def write(self, statement: Statement, params: dict[str, Any]) -> int:
        """A write without RETURNING, grouped like `rotate`; the rows it changed."""
        changed: int = await self._submit(statement, params, rowcount=True)
        return changed

    async def rotate(self, presented: bytes, successor: bytes, now_ms: int) -> Row | None:
        """The rotating UPDATE … RETURNING, committed together with the other writes of this
        loop iteration; its row once the batch is committed."""
        params = {"presented": presented, "successor": successor, "now": now_ms}
        row: Row | None = await self._submit(ROTATE, params, rowcount=False)
        return row

    async def ping(self) -> None:
        self._conn.execute("SELECT 1").fetchall()

    async def _submit(self, statement: Statement, params: dict[str, Any], rowcount: bool) -> Any:
        sql, merged = self._compiled(statement, params)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((sql, merged, rowcount, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After the callbacks already queued: the other requests of this iteration.
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        try:
            outcomes = self._attempt(batch)
        except _Busy as busy:
            now = loop.time()
            if self._busy_since is None:
                self._busy_since = now
            if now - self._busy_since < _BUSY_TIMEOUT_S:
                self._pending[:0] = batch
                self._flush_scheduled = True
                loop.call_later(self._busy_delay, self._flush)
                self._busy_delay = min(self._busy_delay * 2, _MAX_RETRY_S)
                return
            outcomes = [busy.__cause__ or busy] * len(batch)
        self._busy_since = None
        self._busy_delay = _FIRST_RETRY_S
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        for (_sql, _params, _rowcount, future), outcome in zip(batch, outcomes, strict=True):
            if future.cancelled():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _write_one(self, sql: str, params: dict[str, Any], rowcount: bool) -> Any:
        cursor = self._writer.execute(sql, params)
        if rowcount:
            return cursor.rowcount
        # fetchall: a statement with RETURNING is done (and its change made) only once it
        # has run to completion.
        rows: list[Row] = cursor.fetchall()
        return rows[0] if rows else None

    def _attempt(self, batch: list[_Pending]) -> list[Any]:
        """Each statement's result or exception; raises _Busy (nothing done) when another
        process holds the write lock."""
        if len(batch) == 1:
            # One statement is its own transaction (autocommit): no BEGIN and COMMIT to run.
            sql, params, rowcount, _ = batch[0]
            try:
                return [self._write_one(sql, params, rowcount)]
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    raise _Busy from exc  # the statement did nothing; try it again later
                return [exc]
            except sqlite3.Error as exc:
                return [exc]
        try:
            # The write lock up front: once it is ours, no statement below waits for it.
            self._writer.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise _Busy from exc
            return [exc] * len(batch)
        outcomes: list[Any] = []
        try:
            for sql, params, rowcount, _ in batch:
                try:
                    outcomes.append(self._write_one(sql, params, rowcount))
                except sqlite3.IntegrityError as exc:
                    # A constraint undoes this statement only; the transaction goes on, so
                    # the failure belongs to its request alone.
                    outcomes.append(exc)
            self._writer.execute("COMMIT")
        except Exception as exc:
            # I/O error, full disk, ...: SQLite may have rolled back already; nothing is kept.
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            return [exc] * len(batch)
        return outcomes

    async def close(self) -> None:
        self._checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._writer.close()
        self._conn.close()
