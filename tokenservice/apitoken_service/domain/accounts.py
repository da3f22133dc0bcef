"""The pages' accounts: passwords with a growing lockout, server-side sessions, invitations."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from apitoken_service.domain.errors import Conflict, DomainError, Forbidden, NotFound
from apitoken_service.domain.ports import AccountStore, Storage
from apitoken_service.domain.records import InvitationRecord, MemberRecord, Role, SessionRecord
from apitoken_service.domain.service import Caller
from apitoken_service.passwords import hash_password, password_problem, verify_password

log = logging.getLogger("apitoken_service.accounts")

# Failures allowed before the account locks; each further failure doubles the lock.
FREE_FAILURES = 5
FIRST_LOCK = timedelta(seconds=30)
LONGEST_LOCK = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=8)
INVITATION_LIFETIME = timedelta(days=7)


class PasswordRefused(DomainError):
    title = "Password refused"


class SignInRefused(DomainError):
    status = 401
    title = "Sign-in refused"


class SignInLocked(SignInRefused):
    status = 429
    title = "Too many failed sign-ins"

    def __init__(self, until: datetime) -> None:
        super().__init__(f"too many failed sign-ins: try again after {until:%H:%M:%S} UTC")
        self.until = until


def lock_after(failed_count: int, now: datetime) -> datetime | None:
    """When the account unlocks after `failed_count` consecutive failures (None: not locked).
    30 s after the sixth failure, doubling with each further one, at most 15 minutes."""
    if failed_count <= FREE_FAILURES:
        return None
    doublings = min(failed_count - FREE_FAILURES - 1, 10)
    lock: timedelta = min(FIRST_LOCK * 2**doublings, LONGEST_LOCK)
    return now + lock


def secret_digest(secret: str) -> bytes:
    """Session and invitation secrets are 256 random bits: a plain SHA-256 is enough to keep
    the database from holding anything a browser could present."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class SignedIn:
    secret: str
    session: SessionRecord


class AccountService:
    def __init__(self, accounts: AccountStore, storage: Storage) -> None:
        self.accounts = accounts
        self.storage = storage

    async def set_password(self, workspace: str, user: str, password: str, now: datetime) -> None:
        problem = password_problem(password)
        if problem is not None:
            raise PasswordRefused(f"the password needs {problem}")
        if await self.storage.get_member(workspace, user) is None:
            raise NotFound(f"{user!r} is not a member of workspace {workspace!r}")
        await self.accounts.set_password(workspace, user, await hash_password(password), now)
        log.info("password set", extra={"workspace": workspace, "member": user})

    async def sign_in(self, workspace: str, user: str, password: str, now: datetime) -> SignedIn:
        stored = await self.accounts.get_password(workspace, user)
        if stored is not None and stored.locked_until is not None and stored.locked_until > now:
            raise SignInLocked(stored.locked_until)
        member = await self.storage.get_member(workspace, user) if stored else None
        good = await verify_password(stored.hash if stored else None, password)
        if stored is None or member is None or not good:
            if stored is not None:
                failures = stored.failed_count + 1
                until = lock_after(failures, now)
                await self.accounts.record_failure(workspace, user, failures, until)
                log.warning(
                    "sign-in failed",
                    extra={"workspace": workspace, "member": user, "failures": failures},
                )
                if until is not None:
                    raise SignInLocked(until)
            raise SignInRefused("the workspace, user or password is not right")
        await self.accounts.record_success(workspace, user)
        return await self._start_session(workspace, user, now)

    async def _start_session(self, workspace: str, user: str, now: datetime) -> SignedIn:
        secret = secrets.token_urlsafe(32)
        record = SessionRecord(workspace, user, secrets.token_urlsafe(32), now + SESSION_LIFETIME)
        await self.accounts.delete_expired(now)
        await self.accounts.add_session(secret_digest(secret), record, now)
        log.info("signed in", extra={"workspace": workspace, "member": user})
        return SignedIn(secret, record)

    async def caller_of(self, secret: str, now: datetime) -> tuple[Caller, SessionRecord] | None:
        """The signed-in member behind a session cookie (role read afresh), or None."""
        session = await self.accounts.get_session(secret_digest(secret), now)
        if session is None:
            return None
        member = await self.storage.get_member(session.workspace, session.user)
        if member is None:
            return None
        return Caller(member.workspace, member.user, member.role, token_id=""), session

    async def sign_out(self, secret: str) -> None:
        await self.accounts.delete_session(secret_digest(secret))

    # -- invitations -------------------------------------------------------------------------

    async def invite(self, caller: Caller, user: str, role: Role, now: datetime) -> str:
        """A one-time secret for the invitation link; only its digest is stored."""
        if not caller.is_admin:
            raise Forbidden("only workspace admins invite members")
        if await self.storage.get_member(caller.workspace, user) is not None:
            raise Conflict(f"{user!r} is already a member of this workspace")
        secret = secrets.token_urlsafe(32)
        record = InvitationRecord(caller.workspace, user, role, now + INVITATION_LIFETIME)
        await self.accounts.add_invitation(secret_digest(secret), record, caller.user, now)
        log.info(
            "member invited", extra={"workspace": caller.workspace, "member": user, "role": role}
        )
        return secret

    async def invitation(self, secret: str, now: datetime) -> InvitationRecord | None:
        return await self.accounts.get_invitation(secret_digest(secret), now)

    async def accept(self, secret: str, password: str, now: datetime) -> SignedIn:
        problem = password_problem(password)
        if problem is not None:
            raise PasswordRefused(f"the password needs {problem}")
        found = await self.invitation(secret, now)
        if found is None or not await self.accounts.take_invitation(secret_digest(secret)):
            raise NotFound("this invitation is not valid any more")
        if not await self.storage.add_member(
            MemberRecord(found.workspace, found.user, found.role, now)
        ):
            raise Conflict(f"{found.user!r} is already a member of this workspace")
        await self.accounts.set_password(
            found.workspace, found.user, await hash_password(password), now
        )
        log.info("invitation accepted", extra={"workspace": found.workspace, "member": found.user})
        return await self._start_session(found.workspace, found.user, now)
