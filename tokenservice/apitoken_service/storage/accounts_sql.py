"""Storage of the pages' accounts: password hashes, sessions and invitations (SQLAlchemy Core
on the service's engine). Only hashes of secrets are stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from apitoken_service.clock import from_millis, to_millis
from apitoken_service.domain.records import InvitationRecord, PasswordRecord, SessionRecord
from apitoken_service.storage.schema import invitations, passwords, sessions


class SqlAccountStore:
    """The domain's AccountStore (domain/ports.py) on the service's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # -- passwords ---------------------------------------------------------------------------

    async def get_password(self, workspace: str, user: str) -> PasswordRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        passwords.c.hash, passwords.c.failed_count, passwords.c.locked_until
                    ).where(passwords.c.workspace == workspace, passwords.c.user_name == user)
                )
            ).first()
        if row is None:
            return None
        locked = None if row.locked_until is None else from_millis(row.locked_until)
        return PasswordRecord(row.hash, row.failed_count, locked)

    async def set_password(self, workspace: str, user: str, hashed: str, now: datetime) -> None:
        """Store a new hash and clear the failure count (a reset unlocks the account)."""
        values = {"hash": hashed, "failed_count": 0, "locked_until": None}
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                update(passwords)
                .where(passwords.c.workspace == workspace, passwords.c.user_name == user)
                .values(**values, updated_at=to_millis(now))
            )
            if changed.rowcount == 0:
                await conn.execute(
                    passwords.insert().values(
                        workspace=workspace, user_name=user, updated_at=to_millis(now), **values
                    )
                )

    async def record_failure(
        self, workspace: str, user: str, failed_count: int, locked_until: datetime | None
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(passwords)
                .where(passwords.c.workspace == workspace, passwords.c.user_name == user)
                .values(
                    failed_count=failed_count,
                    locked_until=None if locked_until is None else to_millis(locked_until),
                )
            )

    async def record_success(self, workspace: str, user: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(passwords)
                .where(passwords.c.workspace == workspace, passwords.c.user_name == user)
                .values(failed_count=0, locked_until=None)
            )

    # -- sessions ----------------------------------------------------------------------------

    async def add_session(self, digest: bytes, record: SessionRecord, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    digest=digest,
                    workspace=record.workspace,
                    user_name=record.user,
                    csrf=record.csrf,
                    created_at=to_millis(now),
                    expires_at=to_millis(record.expires_at),
                )
            )

    async def get_session(self, digest: bytes, now: datetime) -> SessionRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(sessions).where(
                        sessions.c.digest == digest, sessions.c.expires_at > to_millis(now)
                    )
                )
            ).first()
        if row is None:
            return None
        return SessionRecord(row.workspace, row.user_name, row.csrf, from_millis(row.expires_at))

    async def delete_session(self, digest: bytes) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.digest == digest))

    async def delete_expired(self, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.expires_at <= to_millis(now)))
            await conn.execute(
                delete(invitations).where(invitations.c.expires_at <= to_millis(now))
            )

    # -- invitations -------------------------------------------------------------------------

    async def add_invitation(
        self, digest: bytes, record: InvitationRecord, created_by: str, now: datetime
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                invitations.insert().values(
                    digest=digest,
                    workspace=record.workspace,
                    user_name=record.user,
                    role=record.role,
                    created_by=created_by,
                    created_at=to_millis(now),
                    expires_at=to_millis(record.expires_at),
                )
            )

    async def get_invitation(self, digest: bytes, now: datetime) -> InvitationRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(invitations).where(
                        invitations.c.digest == digest, invitations.c.expires_at > to_millis(now)
                    )
                )
            ).first()
        if row is None:
            return None
        return InvitationRecord(row.workspace, row.user_name, row.role, from_millis(row.expires_at))

    async def take_invitation(self, digest: bytes) -> bool:
        """Consume the invitation; False when it was already used (one-time)."""
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    delete(invitations).where(invitations.c.digest == digest)
                )
        except IntegrityError:
            return False
        return result.rowcount == 1
