"""The token service's use cases over a `Storage`, a `KeyRing` and the service secrets."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NoReturn

import jwt

from apitoken_service.clock import to_millis
from apitoken_service.domain import refresh_tokens
from apitoken_service.domain.errors import (
    Conflict,
    Forbidden,
    InvalidGrant,
    NotFound,
    RefreshTokenReplayed,
    Unauthenticated,
)
from apitoken_service.domain.identifiers import (
    has_forbidden_characters,
    new_token_id,
    quote_token_id,
    valid_token_id,
    valid_user,
)
from apitoken_service.domain.ports import Storage
from apitoken_service.domain.records import (
    MemberRecord,
    RefreshState,
    Role,
    StatusFilter,
    TokenQuery,
    TokenRecord,
)
from apitoken_service.domain.rules import can_see
from apitoken_service.signing import KeyRing, ServiceSecrets

log = logging.getLogger("apitoken_service.domain")

# How many rotations back a presented refresh token is still recognised, so that its replay
# disables the token. Earlier tokens are not stored in any form: the service derives the
# successors of the presented token (two HMACs each, on the failure path only) and looks for
# one of them among current tokens. Beyond this many, an old token is simply unknown.
REPLAY_DETECTION_ROTATIONS = 100
# Refreshes of one token this close to its rotation overlapped it: retries, whatever the grace.
CONCURRENT_REFRESH_WINDOW_MS = 1000


def _usable(state: RefreshState | None, now_ms: int) -> RefreshState:
    """The state of an active, unexpired token; invalid_grant otherwise."""
    if state is None:
        raise InvalidGrant("the refresh token is not valid")
    if state.status != "active":
        raise InvalidGrant("the token is disabled")
    if state.expires_at_ms <= now_ms:
        raise InvalidGrant("the refresh token has expired")
    return state


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str
    audience: str
    access_token_ttl: timedelta
    rotation_grace: timedelta
    rotate_refresh_tokens: bool


@dataclass(frozen=True)
class Caller:
    workspace: str
    user: str
    role: Role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class IssuedToken:
    """A token's metadata and, this once, both values."""

    token: TokenRecord
    access_token: AccessToken
    refresh_token: str


@dataclass(frozen=True)
class GrantResult:
    access_token: AccessToken
    refresh_token: str
    refresh_token_expires_at_ms: int


BulkAction = Literal["disable", "delete"]


@dataclass(frozen=True)
class BulkResult:
    id: str
    ok: bool
    result: Literal["disabled", "deleted", "notFound"]


class KeyRingHolder:
    """The current key ring; replaced in place when keys are reloaded."""

    def __init__(self, ring: KeyRing) -> None:
        self.current = ring


class TokenService:
    def __init__(
        self,
        storage: Storage,
        keys: KeyRingHolder,
        service_secrets: ServiceSecrets,
        policy: TokenPolicy,
    ) -> None:
        self.storage = storage
        self.keys = keys
        self._digest_key = service_secrets.digest_key
        self._rotation_key = service_secrets.rotation_key
        self.policy = policy
        self._ttl_seconds = int(policy.access_token_ttl.total_seconds())
        # A grace of 0 still answers refreshes that overlap the rotation (their successor was
        # written moments ago) as retries: else the losers of a race count as a replay and
        # disable the token, the winner's new refresh token included.
        self._grace_ms = max(
            int(policy.rotation_grace.total_seconds() * 1000), CONCURRENT_REFRESH_WINDOW_MS
        )

    # -- access tokens -----------------------------------------------------------------------

    def issue_access_token(
        self, workspace: str, user: str, token_id: str, now: datetime
    ) -> AccessToken:
        iat = int(now.timestamp())
        exp = iat + self._ttl_seconds
        claims: dict[str, Any] = {
            "iss": self.policy.issuer,
            "sub": user,
            "aud": self.policy.audience,
            "ws": workspace,
            "tid": token_id,
            "jti": secrets.token_urlsafe(12),
            "iat": iat,
            "exp": exp,
        }
        value = self.keys.current.sign(claims)
        return AccessToken(value, datetime.fromtimestamp(exp, now.tzinfo), self._ttl_seconds)

    def verify_access_token(self, value: str, now: datetime) -> dict[str, Any] | None:
        try:
            return self.keys.current.verify(
                value, issuer=self.policy.issuer, audience=self.policy.audience, now=now
            )
        except jwt.PyJWTError:
            # Every way a presented token can be wrong (malformed, unknown key, bad signature,
            # expired) is an invalid token, never an error of the service.
            return None

    async def authenticate(self, bearer: str | None, workspace: str, now: datetime) -> Caller:
        """The caller behind a Bearer access token, for calls on `workspace` only."""
        if not bearer:
            raise Unauthenticated("a Bearer access token is required")
        claims = self.verify_access_token(bearer, now)
        if claims is None:
            raise Unauthenticated("the access token is not valid")
        if claims.get("ws") != workspace:
            raise Unauthenticated("the access token belongs to another workspace")
        member = await self._member_behind(claims)
        if member is None:
            raise Unauthenticated("the access token's user is not a member of this workspace")
        return Caller(workspace, member.user, member.role, str(claims["tid"]))

    async def _member_behind(self, claims: dict[str, Any]) -> MemberRecord | None:
        """The one authorization rule of an access token, for the API and introspection: its
        user is a member of its workspace, and was one when it was issued (a member removed
        and added again does not get their earlier tokens back)."""
        member = await self.storage.get_member(str(claims["ws"]), str(claims["sub"]))
        iat = claims["iat"]
        if member is None or not isinstance(iat, int) or iat < int(member.created_at.timestamp()):
            return None
        return member

    async def authenticate_bearer(self, bearer: str | None, now: datetime) -> Caller:
        """The caller behind a Bearer access token, in the token's own workspace."""
        claims = self.verify_access_token(bearer, now) if bearer else None
        if claims is None:
            raise Unauthenticated("a valid Bearer access token is required")
        return await self.authenticate(bearer, str(claims["ws"]), now)

    # -- tokens ------------------------------------------------------------------------------

    async def issue_token(
        self,
        *,
        workspace: str,
        owner: str,
        name: str,
        lifetime_days: int,
        external_ref: str | None,
        now: datetime,
    ) -> IssuedToken:
        record = TokenRecord(
            id=new_token_id(now),
            workspace=workspace,
            owner=owner,
            name=name,
            external_ref=external_ref,
            status="active",
            created_at=now,
            expires_at=now + timedelta(days=lifetime_days),
            last_used_at=None,
            disabled_at=None,
            disabled_reason=None,
        )
        refresh = refresh_tokens.new_refresh_token()
        await self.storage.insert_token(record, refresh_tokens.digest(self._digest_key, refresh))
        access = self.issue_access_token(workspace, owner, record.id, now)
        log.info(
            "token created", extra={"tokenId": record.id, "workspace": workspace, "owner": owner}
        )
        return IssuedToken(record, access, refresh)

    async def create_token(
        self, caller: Caller, name: str, lifetime_days: int, external_ref: str | None, now: datetime
    ) -> IssuedToken:
        return await self.issue_token(
            workspace=caller.workspace,
            owner=caller.user,
            name=name,
            lifetime_days=lifetime_days,
            external_ref=external_ref,
            now=now,
        )

    async def get_token(self, caller: Caller, token_id: str) -> TokenRecord:
        # An id that no token can have is not looked up (a NUL would fail in PostgreSQL).
        token = (
            await self.storage.get_token(caller.workspace, token_id)
            if valid_token_id(token_id)
            else None
        )
        # Another member's token answers exactly like a missing one: existence is not revealed.
        if token is None or not can_see(caller.user, caller.is_admin, token):
            raise NotFound(f"no token {quote_token_id(token_id)} in this workspace")
        return token

    async def list_tokens(
        self,
        caller: Caller,
        *,
        owner: str | None,
        status: StatusFilter | None,
        external_ref: str | None,
        after: str | None,
        limit: int,
        now: datetime,
    ) -> tuple[list[TokenRecord], str | None]:
        if owner is None:
            owner = caller.user
        if owner != caller.user and not caller.is_admin:
            raise Forbidden("only workspace admins can list other members' tokens")
        if (owner != "*" and not valid_user(owner)) or (
            external_ref is not None and has_forbidden_characters(external_ref)
        ):
            return [], None  # no token has such an owner or reference: nothing to look up
        query = TokenQuery(
            workspace=caller.workspace,
            owner=None if owner == "*" else owner,
            status=status,
            external_ref=external_ref,
            after=after,
            limit=limit + 1,
            now=now,
        )
        found = await self.storage.list_tokens(query)
        page = found[:limit]
        next_after = page[-1].id if len(found) > limit else None
        return page, next_after

    async def disable_token(self, caller: Caller, token_id: str, now: datetime) -> TokenRecord:
        await self.get_token(caller, token_id)
        await self.storage.disable_token(caller.workspace, token_id, now, "disabled")
        log.info("token disabled", extra={"tokenId": token_id, "workspace": caller.workspace})
        return await self.get_token(caller, token_id)

    async def delete_token(self, caller: Caller, token_id: str) -> None:
        await self.get_token(caller, token_id)
        await self.storage.delete_token(caller.workspace, token_id)
        log.info("token deleted", extra={"tokenId": token_id, "workspace": caller.workspace})

    async def bulk(
        self, caller: Caller, action: BulkAction, ids: list[str], now: datetime
    ) -> list[BulkResult]:
        results = []
        for token_id in ids:
            try:
                if action == "disable":
                    await self.disable_token(caller, token_id, now)
                    results.append(BulkResult(token_id, True, "disabled"))
                else:
                    await self.delete_token(caller, token_id)
                    results.append(BulkResult(token_id, True, "deleted"))
            except NotFound:
                results.append(BulkResult(token_id, False, "notFound"))
        return results

    # -- members -----------------------------------------------------------------------------

    def _require_admin(self, caller: Caller) -> None:
        if not caller.is_admin:
            raise Forbidden("only workspace admins manage members")

    async def add_member(
        self, caller: Caller, user: str, role: Role, lifetime_days: int, now: datetime
    ) -> tuple[MemberRecord, IssuedToken]:
        self._require_admin(caller)
        member = MemberRecord(caller.workspace, user, role, now)
        if not await self.storage.add_member(member):
            raise Conflict(f"{user!r} is already a member of this workspace")
        issued = await self.issue_token(
            workspace=caller.workspace,
            owner=user,
            name="initial",
            lifetime_days=lifetime_days,
            external_ref=None,
            now=now,
        )
        log.info(
            "member added", extra={"workspace": caller.workspace, "member": user, "role": role}
        )
        return member, issued

    async def remove_member(self, caller: Caller, user: str) -> None:
        self._require_admin(caller)
        member = await self.storage.get_member(caller.workspace, user) if valid_user(user) else None
        if member is None:
            raise NotFound("no such member in this workspace")
        if member.role == "admin" and await self.storage.count_admins(caller.workspace) <= 1:
            raise Conflict("cannot remove the workspace's last admin")
        await self.storage.remove_member(caller.workspace, user)
        log.info("member removed", extra={"workspace": caller.workspace, "member": user})

    async def change_role(self, caller: Caller, user: str, role: Role, now: datetime) -> None:
        self._require_admin(caller)
        member = await self.storage.get_member(caller.workspace, user)
        if member is None:
            raise NotFound(f"{user!r} is not a member of this workspace")
        if member.role == "admin" and role != "admin":
            if await self.storage.count_admins(caller.workspace) <= 1:
                raise Conflict("cannot demote the workspace's last admin")
        await self.storage.put_member(MemberRecord(caller.workspace, user, role, member.created_at))
        log.info(
            "member role changed",
            extra={"workspace": caller.workspace, "member": user, "role": role},
        )

    async def list_members(
        self, caller: Caller, after: str | None, limit: int
    ) -> tuple[list[MemberRecord], str | None]:
        self._require_admin(caller)
        found = await self.storage.list_members(caller.workspace, after, limit + 1)
        page = found[:limit]
        return page, (page[-1].user if len(found) > limit else None)

    async def bootstrap(
        self, workspace: str, admin: str, lifetime_days: int, now: datetime
    ) -> IssuedToken:
        """`init`: the workspace, its admin, and a first token pair for that admin."""
        await self.storage.ensure_workspace(workspace, now)
        await self.storage.put_member(MemberRecord(workspace, admin, "admin", now))
        return await self.issue_token(
            workspace=workspace,
            owner=admin,
            name="init",
            lifetime_days=lifetime_days,
            external_ref=None,
            now=now,
        )

    # -- the refresh grant -------------------------------------------------------------------

    async def refresh(self, presented: str, now: datetime) -> GrantResult:
        """RFC 6749 section 6 with rotation. The common case is one conditional write that
        rotates the presented current token; anything else (a grace retry, a replay, a disabled,
        expired or unknown token, rotation switched off) reads the token and decides."""
        if not refresh_tokens.looks_like_refresh_token(presented):
            raise InvalidGrant("the refresh token is not valid")
        digest = refresh_tokens.digest(self._digest_key, presented)
        now_ms = to_millis(now)
        if not self.policy.rotate_refresh_tokens:
            state = _usable(await self.storage.find_refresh(digest), now_ms)
            await self.storage.touch_refresh(state.token_id, now_ms)
            return self._grant(
                state.workspace, state.owner, state.token_id, presented, state.expires_at_ms, now
            )
        successor = refresh_tokens.successor(self._rotation_key, presented)
        successor_digest = refresh_tokens.digest(self._digest_key, successor)
        rotated = await self.storage.rotate_refresh(digest, successor_digest, now_ms)
        if rotated is None:
            return await self._refresh_not_current(digest, successor, successor_digest, now)
        return self._grant(
            rotated.workspace,
            rotated.owner,
            rotated.token_id,
            successor,
            rotated.expires_at_ms,
            now,
        )

    async def _refresh_not_current(
        self, digest: bytes, successor: str, successor_digest: bytes, now: datetime
    ) -> GrantResult:
        """The rotating write matched nothing: the presented token is not the current refresh
        token of an active, unexpired token. A retry, a lost race, a replay, or invalid."""
        now_ms = to_millis(now)
        pair = (digest, successor_digest)
        found, rotations_ago = await self._chain_state(successor, pair)
        state = _usable(found, now_ms)
        if secrets.compare_digest(state.current_digest, digest):
            # Current, active and unexpired, yet the write matched nothing: the token changed
            # in between. Try once more, then decide as for a retry.
            rotated = await self.storage.rotate_refresh(digest, successor_digest, now_ms)
            if rotated is not None:
                return self._grant(
                    rotated.workspace,
                    rotated.owner,
                    rotated.token_id,
                    successor,
                    rotated.expires_at_ms,
                    now,
                )
            state = _usable(await self.storage.find_refresh_among(pair), now_ms)
        if secrets.compare_digest(state.current_digest, successor_digest):
            if state.rotated_at_ms is not None and now_ms - state.rotated_at_ms <= self._grace_ms:
                # A retry within the grace period: the same successor, nothing written.
                return self._grant(
                    state.workspace,
                    state.owner,
                    state.token_id,
                    successor,
                    state.expires_at_ms,
                    now,
                )
            await self._disable_replayed(state, now, rotations_ago=1)
        if rotations_ago > 1:
            await self._disable_replayed(state, now, rotations_ago)
        raise InvalidGrant("the refresh token is not valid")

    async def _chain_state(
        self, successor: str, pair: tuple[bytes, bytes]
    ) -> tuple[RefreshState, int]:
        """The token whose current refresh token is the presented one or its successor, or
        else, walking the chain forward, a later one (up to REPLAY_DETECTION_ROTATIONS); and
        how many rotations back the presented token is (0 when found by `pair`)."""
        state = await self.storage.find_refresh_among(pair)
        if state is not None:
            return state, 0
        later = self._successor_digests(successor, REPLAY_DETECTION_ROTATIONS - 1)
        state = await self.storage.find_refresh_among(later)
        if state is None:
            raise InvalidGrant("the refresh token is not valid")
        for index, found in enumerate(later):
            if secrets.compare_digest(found, state.current_digest):
                return state, index + 2
        raise InvalidGrant("the refresh token is not valid")

    def _successor_digests(self, refresh: str, count: int) -> list[bytes]:
        """Digests of the `count` refresh tokens that follow `refresh` in its rotation chain."""
        digests = []
        for _ in range(count):
            refresh = refresh_tokens.successor(self._rotation_key, refresh)
            digests.append(refresh_tokens.digest(self._digest_key, refresh))
        return digests

    async def _disable_replayed(
        self, state: RefreshState, now: datetime, rotations_ago: int
    ) -> NoReturn:
        await self.storage.disable_by_id(state.token_id, now, "replay")
        log.warning(
            "rotated refresh token replayed after the grace period; token disabled",
            extra={
                "tokenId": state.token_id,
                "workspace": state.workspace,
                "rotationsAgo": rotations_ago,
            },
        )
        raise RefreshTokenReplayed("the refresh token was already used; the token is now disabled")

    def _grant(
        self,
        workspace: str,
        owner: str,
        token_id: str,
        refresh: str,
        expires_at_ms: int,
        now: datetime,
    ) -> GrantResult:
        access = self.issue_access_token(workspace, owner, token_id, now)
        return GrantResult(access, refresh, expires_at_ms)

    # -- revocation and introspection --------------------------------------------------------

    async def revoke_refresh_token(self, presented: str, now: datetime) -> None:
        """RFC 7009: presenting a refresh token proves possession; the whole token is disabled."""
        if not refresh_tokens.looks_like_refresh_token(presented):
            return
        digest = refresh_tokens.digest(self._digest_key, presented)
        state = await self.storage.find_refresh(digest)
        if state is None and self.policy.rotate_refresh_tokens:
            # An earlier refresh token of a chain proves possession as well.
            later = self._successor_digests(presented, REPLAY_DETECTION_ROTATIONS)
            state = await self.storage.find_refresh_among(later)
        if state is not None:
            await self.storage.disable_by_id(state.token_id, now, "revoked")
            log.info(
                "token revoked", extra={"tokenId": state.token_id, "workspace": state.workspace}
            )

    async def introspect(self, caller: Caller, presented: str, now: datetime) -> dict[str, Any]:
        """RFC 7662, limited to tokens of the caller's workspace."""
        inactive: dict[str, Any] = {"active": False}
        if refresh_tokens.looks_like_refresh_token(presented):
            digest = refresh_tokens.digest(self._digest_key, presented)
            state = await self.storage.find_refresh(digest)
            if (
                state is None
                or state.workspace != caller.workspace
                or state.status != "active"
                or state.expires_at_ms <= to_millis(now)
                or not secrets.compare_digest(state.current_digest, digest)
            ):
                return inactive
            return {
                "active": True,
                "token_type": "refresh_token",
                "sub": state.owner,
                "username": state.owner,
                "ws": state.workspace,
                "tid": state.token_id,
                "exp": state.expires_at_ms // 1000,
                "iss": self.policy.issuer,
            }
        claims = self.verify_access_token(presented, now)
        if (
            claims is None
            or claims.get("ws") != caller.workspace
            or await self._member_behind(claims) is None
        ):
            return inactive
        return {"active": True, "token_type": "Bearer", "username": claims["sub"], **claims}
