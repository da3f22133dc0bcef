"""Versioned schema migrations: a `schema_version` table and ordered steps.

Each step runs once, in order, inside one transaction with the version bump, under a lock
(PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`) so replicas starting together migrate once.
Steps are frozen once released: a later change is a new step, never an edit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

Step = Callable[[Connection], None]

_version_metadata = MetaData()
schema_version = Table(
    "schema_version", _version_metadata, Column("version", Integer, nullable=False)
)


def _v1_initial(conn: Connection) -> None:
    """The first released schema (frozen copy; do not import schema.py here)."""
    md = MetaData()
    Table(
        "workspaces",
        md,
        Column("id", String(64), primary_key=True),
        Column("created_at", BigInteger, nullable=False),
    )
    Table(
        "members",
        md,
        Column("workspace", String(64), ForeignKey("workspaces.id"), primary_key=True),
        Column("user_name", String(128), primary_key=True),
        Column("role", String(16), nullable=False),
        Column("created_at", BigInteger, nullable=False),
    )
    Table(
        "tokens",
        md,
        Column("id", String(40), primary_key=True),
        Column("workspace", String(64), ForeignKey("workspaces.id"), nullable=False),
        Column("owner", String(128), nullable=False),
        Column("name", String(200), nullable=False),
        Column("external_ref", String(256), nullable=True),
        Column("status", String(16), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=False),
        Column("last_used_at", BigInteger, nullable=True),
        Column("disabled_at", BigInteger, nullable=True),
        Column("refresh_digest", LargeBinary(32), nullable=False, unique=True),
        Column("previous_digest", LargeBinary(32), nullable=True, unique=True),
        Column("rotated_at", BigInteger, nullable=True),
        Index("tokens_by_owner", "workspace", "owner", "id"),
    )
    Table(
        "service_keys",
        md,
        Column("name", String(64), primary_key=True),
        Column("sealed", LargeBinary, nullable=False),
        Column("created_at", BigInteger, nullable=False),
    )
    Table(
        "signing_keys",
        md,
        Column("kid", String(64), primary_key=True),
        Column("algorithm", String(16), nullable=False),
        Column("sealed_private_key", LargeBinary, nullable=False),
        Column("public_jwk", Text, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("retired_at", BigInteger, nullable=True),
        Column("publish_until", BigInteger, nullable=True),
    )
    md.create_all(conn)


def _v2_disable_reason_and_external_ref_index(conn: Connection) -> None:
    """Why a token was disabled (user, replay, revoked) and the operator's sweep by externalRef."""
    conn.execute(text("ALTER TABLE tokens ADD COLUMN disabled_reason VARCHAR(32)"))
    conn.execute(text("CREATE INDEX tokens_by_external_ref ON tokens (workspace, external_ref)"))


def _v3_forget_previous_digests(conn: Connection) -> None:
    """Replays are recognised by deriving successors of the presented token since schema 3
    (domain/service.py); the previous refresh token's digest is no longer kept or read."""
    conn.execute(text("UPDATE tokens SET previous_digest = NULL"))


def _v4_signing_key_token_ttl(conn: Connection) -> None:
    """The longest access-token lifetime a key signed with, recorded by the serving replicas:
    a rotation keeps a retired key published that long, not the rotating command's own TTL."""
    conn.execute(text("ALTER TABLE signing_keys ADD COLUMN token_ttl_seconds BIGINT"))


def _v5_service_settings(conn: Connection) -> None:
    """Choices made once for a database, such as the issuer `init` put in the first tokens."""
    md = MetaData()
    Table(
        "service_settings",
        md,
        Column("name", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    md.create_all(conn)


def _v6_accounts(conn: Connection) -> None:
    """The pages' accounts: password hashes with their failure count, server-side sessions,
    one-time invitations (frozen copy; do not import schema.py here)."""
    md = MetaData()
    Table(
        "passwords",
        md,
        Column("workspace", String(64), primary_key=True),
        Column("user_name", String(128), primary_key=True),
        Column("hash", Text, nullable=False),
        Column("failed_count", Integer, nullable=False),
        Column("locked_until", BigInteger, nullable=True),
        Column("updated_at", BigInteger, nullable=False),
    )
    Table(
        "sessions",
        md,
        Column("digest", LargeBinary(32), primary_key=True),
        Column("workspace", String(64), nullable=False),
        Column("user_name", String(128), nullable=False),
        Column("csrf", String(64), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=False),
        Index("sessions_by_user", "workspace", "user_name"),
    )
    Table(
        "invitations",
        md,
        Column("digest", LargeBinary(32), primary_key=True),
        Column("workspace", String(64), nullable=False),
        Column("user_name", String(128), nullable=False),
        Column("role", String(16), nullable=False),
        Column("created_by", String(128), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=False),
    )
    md.create_all(conn)


STEPS: Sequence[Step] = (
    _v1_initial,
    _v2_disable_reason_and_external_ref_index,
    _v3_forget_previous_digests,
    _v4_signing_key_token_ttl,
    _v5_service_settings,
    _v6_accounts,
)
LATEST = len(STEPS)
# Arbitrary constant naming this service's advisory lock in PostgreSQL.
_PG_LOCK_ID = 0x61706974


def _current_version(conn: Connection) -> int:
    _version_metadata.create_all(conn)
    found = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
    if found is None:
        conn.execute(schema_version.insert().values(version=0))
        return 0
    return int(found)


def _apply(conn: Connection, target: int) -> int:
    version = _current_version(conn)
    if version > len(STEPS):
        raise RuntimeError(
            f"the database schema is version {version}, newer than this service knows "
            f"({len(STEPS)}): upgrade the service"
        )
    for number in range(version + 1, target + 1):
        STEPS[number - 1](conn)
        conn.execute(schema_version.update().values(version=number))
    return max(version, target)


async def migrate(engine: AsyncEngine, target: int = LATEST) -> int:
    """Bring the schema to `target` (default: latest); returns the resulting version."""
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
            return await conn.run_sync(_apply, target)
    # SQLite: Python's sqlite3 does not open a transaction for DDL by itself, so take the write
    # lock explicitly for the whole migration.
    async with engine.connect() as raw:
        conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            version = await conn.run_sync(_apply, target)
        except BaseException:
            await conn.exec_driver_sql("ROLLBACK")
            raise
        await conn.exec_driver_sql("COMMIT")
        return version
