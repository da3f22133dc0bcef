"""The one storage implementation: SQLAlchemy Core over aiosqlite (WAL) or asyncpg."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    case,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from apitoken_service.clock import from_millis, to_millis
from apitoken_service.database_url import DatabaseTarget
from apitoken_service.domain.records import (
    MemberRecord,
    RefreshState,
    RotatedRefresh,
    SigningKeyRecord,
    TokenQuery,
    TokenRecord,
)
from apitoken_service.storage import migrations, refresh_sql
from apitoken_service.storage.fast_path import FastPath, Statement
from apitoken_service.storage.fast_path import Row as FastRow
from apitoken_service.storage.pg_direct import DirectPostgres
from apitoken_service.storage.schema import (
    invitations,
    members,
    passwords,
    service_keys,
    service_settings,
    sessions,
    signing_keys,
    tokens,
    workspaces,
)
from apitoken_service.storage.sqlite_direct import DirectSqlite, sqlite_pragmas


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_millis(moment)


def _dt(millis: int | None) -> datetime | None:
    return None if millis is None else from_millis(millis)


def _token(row: Row[*tuple[Any, ...]]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        workspace=row.workspace,
        owner=row.owner,
        name=row.name,
        external_ref=row.external_ref,
        status=row.status,
        created_at=from_millis(row.created_at),
        expires_at=from_millis(row.expires_at),
        last_used_at=_dt(row.last_used_at),
        disabled_at=_dt(row.disabled_at),
        disabled_reason=row.disabled_reason,
    )


def _refresh_state(row: tuple[Any, ...] | None) -> RefreshState | None:
    if row is None:
        return None
    token_id, workspace, owner, status, expires_at, current, rotated_at = row
    return RefreshState(
        token_id=token_id,
        workspace=workspace,
        owner=owner,
        status=status,
        expires_at_ms=expires_at,
        current_digest=bytes(current),
        rotated_at_ms=rotated_at,
    )


def _member(row: Row[*tuple[Any, ...]]) -> MemberRecord:
    return MemberRecord(
        workspace=row.workspace,
        user=row.user_name,
        role=row.role,
        created_at=from_millis(row.created_at),
    )


_TOKEN_COLUMNS = (
    tokens.c.id,
    tokens.c.workspace,
    tokens.c.owner,
    tokens.c.name,
    tokens.c.external_ref,
    tokens.c.status,
    tokens.c.created_at,
    tokens.c.expires_at,
    tokens.c.last_used_at,
    tokens.c.disabled_at,
    tokens.c.disabled_reason,
)


def create_engine(target: DatabaseTarget) -> AsyncEngine:
    if target.dialect == "sqlite":
        assert target.sqlite_path is not None
        target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 like the key-encryption key: names, owners and external refs are not for every
        # local user. SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(target.sqlite_path, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_async_engine(target.url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    # Pre-ping: after a PostgreSQL restart a pooled connection is replaced, not handed out
    # (the management API's pool; the token endpoint's has its own check, pg_connections.py).
    return create_async_engine(target.url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class SqlStorage:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Single statements need no BEGIN/COMMIT round trips: the refresh path's conditional
        # UPDATE is its own compare-and-swap.
        self._auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._direct: FastPath | None = None

    def _direct_connection(self) -> FastPath:
        if self._direct is None:
            if self._engine.dialect.name == "sqlite":
                assert self._engine.url.database is not None
                self._direct = DirectSqlite(self._engine.url.database)
            else:
                self._direct = DirectPostgres(self._engine.url, self._engine.dialect)
        return self._direct

    async def _first(self, statement: Statement, params: dict[str, Any]) -> FastRow | None:
        """One row of a prebuilt statement (positional, in the statement's column order)."""
        return await self._direct_connection().first(statement, params)

    async def _write(self, statement: Statement, params: dict[str, Any]) -> int:
        """Run one autocommitted prebuilt write; returns the number of rows it changed."""
        return await self._direct_connection().write(statement, params)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def migrate(self) -> int:
        return await migrations.migrate(self._engine)

    async def ping(self) -> None:
        """/readyz: both pools the requests use, the engine's and the token endpoint's."""
        async with self._auto.connect() as conn:
            await conn.execute(select(1))
        await self._direct_connection().ping()

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
            self._direct = None
        await self._engine.dispose()

    # -- keys ---------------------------------------------------------------------------------

    async def get_service_key(self, name: str) -> bytes | None:
        async with self._auto.connect() as conn:
            found = await conn.scalar(
                select(service_keys.c.sealed).where(service_keys.c.name == name)
            )
        return None if found is None else bytes(found)

    async def add_service_key(self, name: str, sealed: bytes, now: datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    service_keys.insert().values(
                        name=name, sealed=sealed, created_at=to_millis(now)
                    )
                )
        except IntegrityError:
            pass  # another replica stored its key first; callers re-read

    async def get_setting(self, name: str) -> str | None:
        async with self._auto.connect() as conn:
            found = await conn.scalar(
                select(service_settings.c.value).where(service_settings.c.name == name)
            )
        return None if found is None else str(found)

    async def add_setting(self, name: str, value: str) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(service_settings.insert().values(name=name, value=value))
        except IntegrityError:
            pass  # set already; callers re-read

    async def signing_keys(self) -> list[SigningKeyRecord]:
        async with self._auto.connect() as conn:
            rows = (
                await conn.execute(select(signing_keys).order_by(signing_keys.c.created_at))
            ).all()
        return [
            SigningKeyRecord(
                kid=row.kid,
                algorithm=row.algorithm,
                sealed_private_key=bytes(row.sealed_private_key),
                public_jwk=row.public_jwk,
                created_at=from_millis(row.created_at),
                retired_at=_dt(row.retired_at),
                publish_until=_dt(row.publish_until),
                token_ttl_seconds=row.token_ttl_seconds,
            )
            for row in rows
        ]

    async def add_signing_key(
        self,
        key: SigningKeyRecord,
        *,
        retire_others_at: datetime | None,
        publish_until: datetime | None,
    ) -> None:
        async with self._engine.begin() as conn:
            if retire_others_at is not None and publish_until is not None:
                await conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.retired_at.is_(None))
                    .values(
                        retired_at=to_millis(retire_others_at),
                        publish_until=to_millis(publish_until),
                    )
                )
            await conn.execute(
                signing_keys.insert().values(
                    kid=key.kid,
                    algorithm=key.algorithm,
                    sealed_private_key=key.sealed_private_key,
                    public_jwk=key.public_jwk,
                    created_at=to_millis(key.created_at),
                    retired_at=None,
                    publish_until=None,
                    token_ttl_seconds=key.token_ttl_seconds,
                )
            )

    async def record_token_ttl(self, kid: str, ttl_seconds: int) -> None:
        column = signing_keys.c.token_ttl_seconds
        async with self._engine.begin() as conn:
            await conn.execute(
                update(signing_keys)
                .where(signing_keys.c.kid == kid, or_(column.is_(None), column < ttl_seconds))
                .values(token_ttl_seconds=ttl_seconds)
            )

    # -- workspaces and members --------------------------------------------------------------

    async def ensure_workspace(self, workspace: str, now: datetime) -> None:
        if await self.workspace_exists(workspace):
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    workspaces.insert().values(id=workspace, created_at=to_millis(now))
                )
        except IntegrityError:
            pass  # created concurrently

    async def workspace_exists(self, workspace: str) -> bool:
        async with self._auto.connect() as conn:
            found = await conn.scalar(select(workspaces.c.id).where(workspaces.c.id == workspace))
        return found is not None

    async def get_member(self, workspace: str, user: str) -> MemberRecord | None:
        row = await self._first(refresh_sql.GET_MEMBER, {"workspace": workspace, "user": user})
        if row is None:
            return None
        found_workspace, found_user, role, created_at = row
        return MemberRecord(found_workspace, found_user, role, from_millis(created_at))

    async def add_member(self, member: MemberRecord) -> bool:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    members.insert().values(
                        workspace=member.workspace,
                        user_name=member.user,
                        role=member.role,
                        created_at=to_millis(member.created_at),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def put_member(self, member: MemberRecord) -> None:
        if not await self.add_member(member):
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(members)
                    .where(
                        members.c.workspace == member.workspace, members.c.user_name == member.user
                    )
                    .values(role=member.role)
                )

    async def remove_member(self, workspace: str, user: str) -> bool:
        async with self._engine.begin() as conn:
            # The member's password, sessions and invitations go with them.
            for table in (passwords, sessions, invitations):
                await conn.execute(
                    delete(table).where(table.c.workspace == workspace, table.c.user_name == user)
                )
            await conn.execute(
                delete(tokens).where(tokens.c.workspace == workspace, tokens.c.owner == user)
            )
            result = await conn.execute(
                delete(members).where(members.c.workspace == workspace, members.c.user_name == user)
            )
        return result.rowcount > 0

    async def list_members(
        self, workspace: str, after: str | None, limit: int
    ) -> list[MemberRecord]:
        query = select(members).where(members.c.workspace == workspace)
        if after is not None:
            query = query.where(members.c.user_name > after)
        query = query.order_by(members.c.user_name).limit(limit)
        async with self._auto.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_member(row) for row in rows]

    async def count_admins(self, workspace: str) -> int:
        async with self._auto.connect() as conn:
            found = await conn.scalar(
                select(func.count())
                .select_from(members)
                .where(members.c.workspace == workspace, members.c.role == "admin")
            )
        return int(found or 0)

    # -- tokens ------------------------------------------------------------------------------

    async def insert_token(self, token: TokenRecord, refresh_digest: bytes) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                tokens.insert().values(
                    id=token.id,
                    workspace=token.workspace,
                    owner=token.owner,
                    name=token.name,
                    external_ref=token.external_ref,
                    status=token.status,
                    created_at=to_millis(token.created_at),
                    expires_at=to_millis(token.expires_at),
                    last_used_at=_ms(token.last_used_at),
                    disabled_at=_ms(token.disabled_at),
                    disabled_reason=token.disabled_reason,
                    refresh_digest=refresh_digest,
                )
            )

    async def get_token(self, workspace: str, token_id: str) -> TokenRecord | None:
        async with self._auto.connect() as conn:
            row = (
                await conn.execute(
                    select(*_TOKEN_COLUMNS).where(
                        tokens.c.workspace == workspace, tokens.c.id == token_id
                    )
                )
            ).first()
        return None if row is None else _token(row)

    async def list_tokens(self, query: TokenQuery) -> list[TokenRecord]:
        now = to_millis(query.now)
        stmt = select(*_TOKEN_COLUMNS).where(tokens.c.workspace == query.workspace)
        if query.owner is not None:
            stmt = stmt.where(tokens.c.owner == query.owner)
        if query.external_ref is not None:
            stmt = stmt.where(tokens.c.external_ref == query.external_ref)
        if query.status == "disabled":
            stmt = stmt.where(tokens.c.status == "disabled")
        elif query.status == "active":
            stmt = stmt.where(tokens.c.status == "active", tokens.c.expires_at > now)
        elif query.status == "expired":
            stmt = stmt.where(tokens.c.status == "active", tokens.c.expires_at <= now)
        if query.after is not None:
            stmt = stmt.where(tokens.c.id > query.after)
        stmt = stmt.order_by(tokens.c.id).limit(query.limit)
        async with self._auto.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_token(row) for row in rows]

    async def disable_token(
        self, workspace: str, token_id: str, now: datetime, reason: str
    ) -> None:
        async with self._auto.connect() as conn:
            await conn.execute(
                update(tokens)
                .where(
                    tokens.c.workspace == workspace,
                    tokens.c.id == token_id,
                    tokens.c.status == "active",
                )
                .values(status="disabled", disabled_at=to_millis(now), disabled_reason=reason)
            )

    async def delete_token(self, workspace: str, token_id: str) -> bool:
        async with self._auto.connect() as conn:
            result = await conn.execute(
                delete(tokens).where(tokens.c.workspace == workspace, tokens.c.id == token_id)
            )
        return result.rowcount > 0

    async def count_tokens_by_status(self, now: datetime) -> dict[str, int]:
        status = case(
            (tokens.c.status == "disabled", "disabled"),
            (tokens.c.expires_at <= to_millis(now), "expired"),
            else_="active",
        ).label("effective")
        async with self._auto.connect() as conn:
            rows = (await conn.execute(select(status, func.count()).group_by(status))).all()
        counts = {"active": 0, "disabled": 0, "expired": 0}
        for effective, count in rows:
            counts[str(effective)] = int(count)
        return counts

    # -- the token endpoint --------------------------------------------------------------------

    async def find_refresh(self, digest: bytes) -> RefreshState | None:
        return _refresh_state(await self._first(refresh_sql.FIND_REFRESH, {"digest": digest}))

    async def find_refresh_among(self, digests: Sequence[bytes]) -> RefreshState | None:
        if not digests:
            return None
        if len(digests) <= 2:
            params = {"first": digests[0], "second": digests[-1]}
            return _refresh_state(await self._first(refresh_sql.FIND_REFRESH_PAIR, params))
        if len(digests) > refresh_sql.CHAIN_DIGESTS:
            raise ValueError(f"at most {refresh_sql.CHAIN_DIGESTS} digests")
        padded = [*digests, *[digests[-1]] * (refresh_sql.CHAIN_DIGESTS - len(digests))]
        params = {f"d{i}": value for i, value in enumerate(padded)}
        return _refresh_state(await self._first(refresh_sql.FIND_REFRESH_CHAIN, params))

    async def rotate_refresh(
        self, presented: bytes, successor: bytes, now_ms: int
    ) -> RotatedRefresh | None:
        # The rotations of one loop iteration are committed together (sqlite_direct.py,
        # pg_batched_rotation.py).
        row = await self._direct_connection().rotate(presented, successor, now_ms)
        if row is None:
            return None
        token_id, workspace, owner, expires_at = row
        return RotatedRefresh(token_id, workspace, owner, expires_at)

    async def touch_refresh(self, token_id: str, now_ms: int) -> None:
        await self._write(refresh_sql.TOUCH, {"token_id": token_id, "now": now_ms})

    async def disable_by_id(self, token_id: str, now: datetime, reason: str) -> None:
        await self._write(
            refresh_sql.DISABLE_BY_ID,
            {"token_id": token_id, "now": to_millis(now), "reason": reason},
        )
