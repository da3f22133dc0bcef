"""The storage interfaces the domain depends on; storage/ implements them (SqlStorage,
SqlAccountStore), and only the start-up code (startup.py) picks the implementation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from apitoken_service.domain.records import (
    InvitationRecord,
    MemberRecord,
    PasswordRecord,
    RefreshState,
    RotatedRefresh,
    SessionRecord,
    SigningKeyRecord,
    TokenQuery,
    TokenRecord,
)


class Storage(Protocol):
    async def migrate(self) -> int: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # Sealed service secrets (rotation and digest keys) and signing keys.
    async def get_service_key(self, name: str) -> bytes | None: ...
    async def add_service_key(self, name: str, sealed: bytes, now: datetime) -> None:
        """Store the key unless one with that name exists (a concurrent replica won)."""

    async def signing_keys(self) -> list[SigningKeyRecord]: ...
    async def add_signing_key(
        self,
        key: SigningKeyRecord,
        *,
        retire_others_at: datetime | None,
        publish_until: datetime | None,
    ) -> None:
        """Insert a key; with `retire_others_at`, retire every other active key in the same
        transaction, published until `publish_until`."""

    async def get_setting(self, name: str) -> str | None: ...
    async def add_setting(self, name: str, value: str) -> None:
        """Store the setting unless it is set already (a concurrent replica won)."""

    async def record_token_ttl(self, kid: str, ttl_seconds: int) -> None:
        """Raise the key's recorded access-token lifetime to `ttl_seconds` (never lower it)."""

    # Workspaces and members.
    async def ensure_workspace(self, workspace: str, now: datetime) -> None: ...
    async def workspace_exists(self, workspace: str) -> bool: ...
    async def get_member(self, workspace: str, user: str) -> MemberRecord | None: ...
    async def add_member(self, member: MemberRecord) -> bool:
        """False when the user is already a member."""

    async def put_member(self, member: MemberRecord) -> None: ...
    async def remove_member(self, workspace: str, user: str) -> bool:
        """Remove the member and delete every token they own."""

    async def list_members(
        self, workspace: str, after: str | None, limit: int
    ) -> list[MemberRecord]: ...
    async def count_admins(self, workspace: str) -> int: ...

    # Tokens.
    async def insert_token(self, token: TokenRecord, refresh_digest: bytes) -> None: ...
    async def get_token(self, workspace: str, token_id: str) -> TokenRecord | None: ...
    async def list_tokens(self, query: TokenQuery) -> list[TokenRecord]: ...
    async def disable_token(
        self, workspace: str, token_id: str, now: datetime, reason: str
    ) -> None: ...
    async def delete_token(self, workspace: str, token_id: str) -> bool: ...
    async def count_tokens_by_status(self, now: datetime) -> dict[str, int]: ...

    # The token endpoint: usually one conditional write; a read only when it matched nothing.
    async def find_refresh(self, digest: bytes) -> RefreshState | None:
        """The token whose current refresh token has this digest."""

    async def find_refresh_among(self, digests: Sequence[bytes]) -> RefreshState | None:
        """The token whose current refresh token has one of these digests (at most one can:
        they are digests of one rotation chain)."""

    async def rotate_refresh(
        self, presented: bytes, successor: bytes, now_ms: int
    ) -> RotatedRefresh | None:
        """In one statement: swap the current digest `presented` for `successor` if the token
        is active and unexpired; None when no token matched (then read and decide). The
        previous digest is not kept: the domain recognises earlier refresh tokens by deriving
        their successors."""

    async def touch_refresh(self, token_id: str, now_ms: int) -> None:
        """Record use without rotation (rotation switched off)."""

    async def disable_by_id(self, token_id: str, now: datetime, reason: str) -> None: ...


class AccountStore(Protocol):
    """The pages' accounts: password hashes, sessions and invitations, stored by digest."""

    async def get_password(self, workspace: str, user: str) -> PasswordRecord | None: ...
    async def set_password(self, workspace: str, user: str, hashed: str, now: datetime) -> None:
        """Store a new hash and clear the failure count (a reset unlocks the account)."""

    async def record_failure(
        self, workspace: str, user: str, failed_count: int, locked_until: datetime | None
    ) -> None: ...
    async def record_success(self, workspace: str, user: str) -> None: ...

    async def add_session(self, digest: bytes, record: SessionRecord, now: datetime) -> None: ...
    async def get_session(self, digest: bytes, now: datetime) -> SessionRecord | None: ...
    async def delete_session(self, digest: bytes) -> None: ...
    async def delete_expired(self, now: datetime) -> None:
        """Drop expired sessions and invitations."""

    async def add_invitation(
        self, digest: bytes, record: InvitationRecord, created_by: str, now: datetime
    ) -> None: ...
    async def get_invitation(self, digest: bytes, now: datetime) -> InvitationRecord | None: ...
    async def take_invitation(self, digest: bytes) -> bool:
        """Consume the invitation; False when it was already used (one-time)."""
