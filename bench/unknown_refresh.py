"""What an unknown refresh token costs the token service, against a real refresh (issue 9, item 6).

`python -m bench.unknown_refresh` (`make bench-unknown-refresh`). In one process, no HTTP, on a
real database: `TokenService.refresh` is called in rounds of `--calls` calls of each kind, the
kinds interleaved round by round so that they share the machine's moments, and each kind's CPU
time per call (`time.process_time`, this process only: not the PostgreSQL server's) is the
median over `--rounds` rounds.

- **refresh** (the same-run baseline): a chained refresh of a real token, what a client with a
  valid token costs.
- **unknown**: a well-formed refresh token the service never issued. The rotating `UPDATE`
  matches nothing, then the service reads the presented token and its successor, then walks the
  rotation chain: 100 derived successors (200 HMACs) and one read of 100 digests.
- **unknown, former code**: the same call with the chain walk as it was before commit 0adc483
  (a new HMAC object per digest, the `IN` list built per call through SQLAlchemy's engine),
  reproduced below, for the figure issue 9 quotes (2.95 ms against 0.65 to 0.8 ms).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvloop
from sqlalchemy import select

from apitoken_service.domain import refresh_tokens
from apitoken_service.domain.errors import InvalidGrant
from apitoken_service.domain.records import RefreshState
from apitoken_service.settings import Settings
from apitoken_service.startup import OpenedService, open_service
from apitoken_service.storage import refresh_sql
from apitoken_service.storage.schema import tokens
from apitoken_service.storage.sql import SqlStorage
from bench import machine
from bench.postgres import running_postgres

KINDS = ("refresh", "unknown", "unknown, former code")


def _unknown_token() -> str:
    return refresh_tokens.new_refresh_token()  # 256 random bits: never issued


async def _calls(opened: OpenedService, kind: str, chains: list[str], count: int) -> float:
    """CPU seconds per call of `count` calls of one kind."""
    service = opened.service
    started = time.process_time()
    for i in range(count):
        now = datetime.now(UTC)
        if kind == "refresh":
            slot = i % len(chains)
            chains[slot] = (await service.refresh(chains[slot], now)).refresh_token
            continue
        try:
            await service.refresh(_unknown_token(), now)
        except InvalidGrant:
            pass
        else:
            raise RuntimeError("an unknown refresh token was accepted")
    return (time.process_time() - started) / count


@contextmanager
def _former_code(storage: SqlStorage) -> Iterator[None]:
    """The chain walk as before 0adc483, for this block: plain HMACs, and the walk's read built
    per call on SQLAlchemy's engine."""
    keyed_hmac = refresh_tokens._hmac
    find_among = storage.find_refresh_among

    def plain_hmac(key: bytes, message: str) -> bytes:
        return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()

    async def engine_find_among(digests: Sequence[bytes]) -> RefreshState | None:
        if len(digests) <= 2:
            return await find_among(digests)
        columns = refresh_sql.REFRESH_COLUMNS
        async with storage.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*columns).where(tokens.c.refresh_digest.in_(list(digests)))
                )
            ).first()
        if row is None:
            return None
        token_id, workspace, owner, status, expires_at, current, rotated_at = tuple(row)
        return RefreshState(
            token_id, workspace, owner, status, expires_at, bytes(current), rotated_at
        )

    refresh_tokens._hmac = plain_hmac
    storage.find_refresh_among = engine_find_among  # type: ignore[method-assign]
    try:
        yield
    finally:
        refresh_tokens._hmac = keyed_hmac
        storage.find_refresh_among = find_among  # type: ignore[method-assign]


async def _measure(url: str, rounds: int, calls: int, tokens_count: int) -> dict[str, list[float]]:
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = Settings(database_url=url, key_encryption_key=kek, access_log=False)
    opened = await open_service(settings, lambda: datetime.now(UTC), signs=True)
    try:
        now = datetime.now(UTC)
        admin = await opened.service.bootstrap("bench", "bench-admin", 30, now)
        chains = [admin.refresh_token]
        for i in range(tokens_count - 1):
            issued = await opened.service.issue_token(
                workspace="bench",
                owner="bench-admin",
                name=f"chain-{i}",
                lifetime_days=30,
                external_ref=None,
                now=now,
            )
            chains.append(issued.refresh_token)
        per_call: dict[str, list[float]] = {kind: [] for kind in KINDS}
        # One round of each first, not counted: statement caches and connections warm up.
        for round_number in range(rounds + 1):
            for kind in KINDS:
                if kind == "unknown, former code":
                    with _former_code(opened.storage):
                        seconds = await _calls(opened, kind, chains, calls)
                else:
                    seconds = await _calls(opened, kind, chains, calls)
                if round_number:
                    per_call[kind].append(seconds)
        return per_call
    finally:
        await opened.close()


def _row(backend: str, kind: str, samples: list[float], baseline: float) -> str:
    median = statistics.median(samples)
    low, high = min(samples), max(samples)
    return (
        f"| {backend} | {kind} | {median * 1e3:.2f} | {low * 1e3:.2f} to {high * 1e3:.2f} "
        f"| {median / baseline:.1f}x |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per kind")
    parser.add_argument("--calls", type=int, default=300, help="calls per kind and round")
    parser.add_argument("--tokens", type=int, default=20, help="token chains refreshed in turn")
    args = parser.parse_args(argv)
    print(f"load average at start (1/5/15 min): {machine.load_average()}", file=sys.stderr)
    lines = [
        "| Backend | Call | CPU per call, median (ms) | Range over rounds (ms) | vs. refresh |",
        "|---|---|---|---|---|",
    ]
    for backend in [b for b in args.backends.split(",") if b]:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="apitoken-bench-unknown-") as folder:
                url = f"sqlite:///{Path(folder) / 'bench.db'}"
                results = _run(_measure(url, args.rounds, args.calls, args.tokens))
        elif backend == "postgresql":
            with running_postgres() as postgres:
                results = _run(_measure(postgres.url(), args.rounds, args.calls, args.tokens))
        else:
            parser.error(f"unknown backend {backend!r}")
        baseline = statistics.median(results["refresh"])
        lines += [_row(backend, kind, results[kind], baseline) for kind in KINDS]
    print(f"load average at end (1/5/15 min): {machine.load_average()}", file=sys.stderr)
    print("\n".join(lines))
    return 0


def _run(measurement: Coroutine[None, None, dict[str, list[float]]]) -> dict[str, list[float]]:
    # uvloop, as `serve` runs the service.
    return uvloop.run(measurement)


if __name__ == "__main__":
    raise SystemExit(main())
