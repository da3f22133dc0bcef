"""PostgreSQL: the rotating writes of one event-loop iteration as one statement.

Every refresh whose request arrived together is rotated by one `UPDATE … FROM unnest(…)`: one
round trip and one commit (with its WAL flush) per batch instead of per refresh. Each row keeps
its own condition (the presented digest is current, the token active and unexpired at that
request's time), so the outcome per refresh is the one its own statement would have had; a
token presented twice in a batch is rotated once and the later request is answered as a retry.
If a constraint refuses the statement, each refresh of the batch runs on its own, so the failure
belongs to its request alone; any other failure (a lost connection) fails the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from apitoken_service.storage.pg_connections import PgConnections

Row = tuple[Any, ...]
Single = Callable[[bytes, bytes, int], Awaitable[Row | None]]

# Returns the presented digest first, then the columns of the single statement's RETURNING.
ROTATE_BATCH = """
UPDATE tokens
SET refresh_digest = v.successor, rotated_at = v.now, last_used_at = v.now
FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) AS v(presented, successor, now)
WHERE tokens.refresh_digest = v.presented
  AND tokens.status = 'active'
  AND tokens.expires_at > v.now
RETURNING v.presented, tokens.id, tokens.workspace, tokens.owner, tokens.expires_at
"""

_Pending = tuple[bytes, bytes, int, "asyncio.Future[Row | None]"]


class BatchedRotations:
    def __init__(self, connections: PgConnections, single: Single) -> None:
        self._connections = connections
        self._single = single
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def rotate(self, presented: bytes, successor: bytes, now_ms: int) -> Row | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Row | None] = loop.create_future()
        self._pending.append((presented, successor, now_ms, future))
        if not self._scheduled:
            self._scheduled = True
            # After the callbacks already queued: the other requests of this iteration.
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        outcomes: list[Row | BaseException | None] = []
        try:
            if len(batch) > 1:
                outcomes = await self._together(batch)
        except asyncpg.IntegrityConstraintViolationError:
            pass  # one row's constraint: each on its own below, so the failure is its alone
        except Exception as exc:
            # A lost connection, a timeout, ...: it would fail each statement alike.
            outcomes = [exc] * len(batch)
        if not outcomes:
            outcomes = [await self._alone(p, s, n) for p, s, n, _ in batch]
        for (_, _, _, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _together(self, batch: list[_Pending]) -> list[Row | BaseException | None]:
        rows = await self._connections.fetch(
            ROTATE_BATCH,
            [p for p, _, _, _ in batch],
            [s for _, s, _, _ in batch],
            [n for _, _, n, _ in batch],
        )
        rotated = {bytes(row[0]): tuple(row)[1:] for row in rows}
        # A digest presented twice: the first request gets the rotation, the others None.
        return [rotated.pop(presented, None) for presented, _, _, _ in batch]

    async def _alone(
        self, presented: bytes, successor: bytes, now_ms: int
    ) -> Row | Exception | None:
        try:
            return await self._single(presented, successor, now_ms)
        except Exception as exc:
            return exc
