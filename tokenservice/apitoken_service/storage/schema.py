"""The current schema, for queries. Migrations (migrations.py) create and evolve it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("workspace", String(64), ForeignKey("workspaces.id"), primary_key=True),
    Column("user_name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
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
    # Digests only (HMAC-SHA256); the values are never stored.
    Column("refresh_digest", LargeBinary(32), nullable=False, unique=True),
    # Unused since schema 3 (always NULL): earlier refresh tokens are recognised by deriving.
    Column("previous_digest", LargeBinary(32), nullable=True, unique=True),
    Column("rotated_at", BigInteger, nullable=True),
    # Added by migration 2.
    Column("disabled_reason", String(32), nullable=True),
    Index("tokens_by_owner", "workspace", "owner", "id"),
    Index("tokens_by_external_ref", "workspace", "external_ref"),
)

service_keys = Table(
    "service_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

service_settings = Table(
    "service_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("sealed_private_key", LargeBinary, nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
    Column("publish_until", BigInteger, nullable=True),
    Column("token_ttl_seconds", BigInteger, nullable=True),
)

# Added by migration 4: the pages' accounts. Secrets are stored as hashes only: argon2id for
# passwords, SHA-256 for session and invitation secrets (random, 256 bits).
passwords = Table(
    "passwords",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("user_name", String(128), primary_key=True),
    Column("hash", Text, nullable=False),
    Column("failed_count", Integer, nullable=False),
    Column("locked_until", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("user_name", String(128), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("sessions_by_user", "workspace", "user_name"),
)

invitations = Table(
    "invitations",
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("user_name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
