"""Plain records passed between the storage and the domain (the domain owns them; the storage
fills them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Role = Literal["member", "admin"]
StoredStatus = Literal["active", "disabled"]
StatusFilter = Literal["active", "disabled", "expired"]


@dataclass(frozen=True, slots=True)
class MemberRecord:
    workspace: str
    user: str
    role: Role
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    workspace: str
    owner: str
    name: str
    external_ref: str | None
    status: StoredStatus
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class RefreshState:
    """What the token endpoint reads for a presented refresh token (times in epoch ms)."""

    token_id: str
    workspace: str
    owner: str
    status: StoredStatus
    expires_at_ms: int
    current_digest: bytes
    rotated_at_ms: int | None


@dataclass(frozen=True, slots=True)
class RotatedRefresh:
    """The token whose current refresh token was just rotated (expiry in epoch ms)."""

    token_id: str
    workspace: str
    owner: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class TokenQuery:
    workspace: str
    owner: str | None  # None: every member's tokens
    status: StatusFilter | None
    external_ref: str | None
    after: str | None  # keyset cursor: the last id of the previous page
    limit: int
    now: datetime


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    kid: str
    algorithm: str
    sealed_private_key: bytes
    public_jwk: str
    created_at: datetime
    retired_at: datetime | None
    publish_until: datetime | None
    # The longest access-token lifetime a serving replica signed with this key (schema 4).
    token_ttl_seconds: int | None = None


# The pages' accounts (domain/accounts.py); only digests of their secrets are stored.


@dataclass(frozen=True, slots=True)
class PasswordRecord:
    hash: str
    failed_count: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    workspace: str
    user: str
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    workspace: str
    user: str
    role: Role
    expires_at: datetime
