"""Storage on both databases: migrations keep tokens, only digests are stored, keys are sealed."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from apitoken_service.api.deps import Runtime
from apitoken_service.clock import to_millis
from apitoken_service.database_url import parse_database_url
from apitoken_service.domain import refresh_tokens
from apitoken_service.domain.records import TokenRecord
from apitoken_service.key_encryption import KeyEncryptionError
from apitoken_service.settings import Settings
from apitoken_service.signing import (
    add_first_signing_key,
    load_key_ring,
    load_service_secrets,
    new_signing_key,
)
from apitoken_service.startup import open_service, resolve_kek
from apitoken_service.storage import migrations
from apitoken_service.storage.schema import metadata
from apitoken_service.storage.sql import SqlStorage, create_engine
from support.tokenservice import ApiSession

from .conftest import FakeClock

pytestmark = pytest.mark.service


async def test_an_older_schema_upgrades_without_losing_tokens(
    settings: Settings, clock: FakeClock
) -> None:
    target = parse_database_url(settings.database_url)
    kek = resolve_kek(settings, target)
    old = SqlStorage(create_engine(target))
    # A database as release 1 left it, holding a token issued then.
    assert await migrations.migrate(old.engine, target=1) == 1
    now = clock()
    service_secrets = await load_service_secrets(old, kek, now)
    key = new_signing_key(kek, now)
    async with old.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO signing_keys (kid, algorithm, sealed_private_key, public_jwk,"
                " created_at) VALUES (:kid, :alg, :sealed, :jwk, :now)"
            ),
            {"kid": key.kid, "alg": key.algorithm, "sealed": key.sealed_private_key,
             "jwk": key.public_jwk, "now": to_millis(now)},
        )  # fmt: skip
    refresh = refresh_tokens.new_refresh_token()
    async with old.engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO workspaces (id, created_at) VALUES ('acme', :now)"),
            {"now": to_millis(now)},
        )
        await conn.execute(
            text(
                "INSERT INTO members (workspace, user_name, role, created_at) "
                "VALUES ('acme', 'alice', 'admin', :now)"
            ),
            {"now": to_millis(now)},
        )
        await conn.execute(
            text(
                "INSERT INTO tokens (id, workspace, owner, name, external_ref, status, created_at,"
                " expires_at, refresh_digest) VALUES ('tk_old', 'acme', 'alice', 'from v1', 'uid',"
                " 'active', :now, :exp, :digest)"
            ),
            {
                "now": to_millis(now),
                "exp": to_millis(now + timedelta(days=30)),
                "digest": refresh_tokens.digest(service_secrets.digest_key, refresh),
            },
        )
    await old.close()

    opened = await open_service(settings, clock)  # what `serve` does: migrate to the latest
    try:
        assert await opened.storage.migrate() == migrations.LATEST  # idempotent
        result = await opened.service.refresh(refresh, clock())
        token = await opened.storage.get_token("acme", "tk_old")
        assert token is not None and token.name == "from v1" and token.external_ref == "uid"
        assert token.last_used_at == clock() and token.disabled_reason is None
        assert result.refresh_token.startswith("apit_rt_")
        async with opened.storage.engine.connect() as conn:
            version = await conn.scalar(select(migrations.schema_version.c.version))
        assert version == migrations.LATEST == 6
    finally:
        await opened.close()


async def test_migrated_schema_matches_the_query_schema(runtime: Runtime) -> None:
    """Migrations and schema.py must describe the same tables and columns."""

    def shape(sync_conn: Any) -> dict[str, set[str]]:
        inspector = inspect(sync_conn)
        return {
            table: {c["name"] for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()
            if table != "schema_version"
        }

    async with runtime.require_opened().storage.engine.connect() as conn:
        found = await conn.run_sync(shape)
    assert found == {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}


async def _all_cells(conn: AsyncConnection) -> list[Any]:
    tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    cells: list[Any] = []
    for table in tables:
        for row in (await conn.execute(text(f'SELECT * FROM "{table}"'))).all():
            cells.extend(row)
    return cells


async def test_database_holds_no_token_value(
    admin: ApiSession, member: ApiSession, runtime: Runtime, settings: Settings, clock: FakeClock
) -> None:
    values = [admin.access_token, admin.refresh_token, member.access_token, member.refresh_token]
    token = await admin.create_token("scan", 5, external_ref="uid-scan")
    values += [token["accessToken"], token["refreshToken"]]
    rotated = (await admin.refresh(token["refreshToken"])).json()
    values += [rotated["access_token"], rotated["refresh_token"]]
    clock.advance(5)
    values.append((await admin.refresh(token["refreshToken"])).json()["access_token"])
    await admin.http.post(admin.path(f"/tokens/{token['id']}/disable"), headers=admin.headers)
    secrets_too = values + [v.removeprefix("apit_rt_") for v in values if v.startswith("apit_rt_")]

    async with runtime.require_opened().storage.engine.connect() as conn:
        cells = await _all_cells(conn)
    as_text = "\n".join(str(c) for c in cells)
    blobs = b"".join(bytes(c) for c in cells if isinstance(c, bytes | memoryview))
    assert "uid-scan" in as_text and len(blobs) > 64  # the scan sees the data
    files = b""
    target = parse_database_url(settings.database_url)
    if target.sqlite_path is not None:
        files = b"".join(p.read_bytes() for p in target.sqlite_path.parent.glob("service.db*"))
        assert files
    for value in secrets_too:
        assert value not in as_text
        assert value.encode() not in blobs and value.encode() not in files
    # Signing and rotation keys are sealed: the stored bytes are not the keys in use.
    opened = runtime.require_opened()
    assert opened.service.keys.current.signer_kid in as_text
    raw_rotation_key = opened.service._rotation_key
    assert raw_rotation_key not in blobs and raw_rotation_key not in files


async def test_a_different_key_encryption_key_is_refused(
    settings: Settings, clock: FakeClock
) -> None:
    opened = await open_service(settings, clock)
    await opened.close()
    wrong = SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    other = settings.model_copy(
        update={"key_encryption_key_file": None, "key_encryption_key": wrong}
    )
    with pytest.raises(KeyEncryptionError, match="does not belong to this database"):
        await open_service(other, clock)


async def test_replicas_racing_to_create_the_first_key_agree_on_the_signer(
    settings: Settings, clock: FakeClock
) -> None:
    target = parse_database_url(settings.database_url)
    kek = resolve_kek(settings, target)
    storage = SqlStorage(create_engine(target))
    await storage.migrate()
    try:
        # Two replicas start on an empty database. A finds no key, adds one and loads its ring;
        # B had also found none, adds its own a moment later, then loads.
        ring_a = await load_key_ring(storage, kek, clock())
        clock.advance(0.5)
        await add_first_signing_key(storage, kek, clock())
        ring_b = await load_key_ring(storage, kek, clock())
        stored = await storage.signing_keys()
    finally:
        await storage.close()
    assert len(stored) == 2
    assert ring_a.signer_kid == ring_b.signer_kid
    assert all(key.retired_at is None for key in stored)  # nothing a replica signs with vanishes

    opened = await open_service(settings, clock)
    try:
        assert opened.service.keys.current.signer_kid == ring_a.signer_kid
        assert len(opened.service.keys.current.jwks(clock())["keys"]) == len(stored)
    finally:
        await opened.close()


async def test_rotations_sent_together_succeed_or_fail_each_on_their_own(
    admin: ApiSession, runtime: Runtime, clock: FakeClock
) -> None:
    # SQLite commits the rotations of one loop iteration in one transaction; a failing one
    # must not take the others down with it.
    storage = runtime.require_opened().storage
    digest_key = runtime.require_opened().service._digest_key
    created = [await admin.create_token(f"batch-{i}") for i in range(3)]
    presented = [refresh_tokens.digest(digest_key, t["refreshToken"]) for t in created]
    clash = secrets.token_bytes(32)
    now_ms = to_millis(clock())

    outcomes = await asyncio.gather(
        storage.rotate_refresh(presented[0], clash, now_ms),
        storage.rotate_refresh(presented[1], clash, now_ms),  # the same new digest: refused
        storage.rotate_refresh(presented[2], secrets.token_bytes(32), now_ms),
        return_exceptions=True,
    )

    first, second, third = outcomes
    assert not isinstance(first, BaseException) and first is not None
    assert first.token_id == created[0]["id"]
    assert isinstance(second, Exception)
    assert not isinstance(third, BaseException) and third is not None
    assert third.token_id == created[2]["id"]
    found = await storage.find_refresh(clash)
    assert found is not None and found.token_id == created[0]["id"]
    unchanged = await storage.find_refresh(presented[1])
    assert unchanged is not None and unchanged.token_id == created[1]["id"]


async def test_rotations_sent_together_each_rotate_their_own_token(
    admin: ApiSession, runtime: Runtime, clock: FakeClock
) -> None:
    storage = runtime.require_opened().storage
    digest_key = runtime.require_opened().service._digest_key
    created = [await admin.create_token(f"together-{i}") for i in range(4)]
    presented = [refresh_tokens.digest(digest_key, t["refreshToken"]) for t in created]
    successors = [secrets.token_bytes(32) for _ in created]
    now_ms = to_millis(clock())

    rotated = await asyncio.gather(
        *(storage.rotate_refresh(p, s, now_ms) for p, s in zip(presented, successors, strict=True)),
        storage.rotate_refresh(presented[0], successors[0], now_ms),  # presented twice
    )

    assert [r.token_id if r else None for r in rotated] == [t["id"] for t in created] + [None]
    for token, successor in zip(created, successors, strict=True):
        found = await storage.find_refresh(successor)
        assert found is not None and found.token_id == token["id"]
        assert found.rotated_at_ms == now_ms


async def test_sqlite_write_lock_held_elsewhere_does_not_stall_the_event_loop(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "locked.db"
    storage = SqlStorage(create_engine(parse_database_url(f"sqlite:///{path}")))
    await storage.migrate()
    now = clock()
    await storage.ensure_workspace("acme", now)
    token = TokenRecord(
        id="tk_locked",
        workspace="acme",
        owner="alice",
        name="locked",
        external_ref=None,
        status="active",
        created_at=now,
        expires_at=now + timedelta(days=1),
        last_used_at=None,
        disabled_at=None,
        disabled_reason=None,
    )
    presented, successor = secrets.token_bytes(32), secrets.token_bytes(32)
    await storage.insert_token(token, presented)
    other_process = sqlite3.connect(path, isolation_level=None)
    try:
        other_process.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock
        rotation = asyncio.ensure_future(storage.rotate_refresh(presented, successor, 1))

        started = time.monotonic()
        await asyncio.sleep(0.05)
        # The loop ran other work meanwhile (SQLite's busy handler would have slept on it).
        assert time.monotonic() - started < 1.0
        assert not rotation.done()

        other_process.execute("COMMIT")
        rotated = await asyncio.wait_for(rotation, timeout=5)
        assert rotated is not None and rotated.token_id == "tk_locked"
    finally:
        other_process.close()
        await storage.close()
