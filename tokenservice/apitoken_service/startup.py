"""Opening the service: database, migrations, key-encryption key, keys."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from apitoken_service.clock import Clock
from apitoken_service.database_url import DatabaseTarget, parse_database_url
from apitoken_service.domain.accounts import AccountService
from apitoken_service.domain.service import KeyRingHolder, TokenPolicy, TokenService
from apitoken_service.key_encryption import (
    KeyEncryptionError,
    KeyEncryptionKey,
    generate_key_file,
    load_key_file,
)
from apitoken_service.settings import IssuerMismatch, Settings
from apitoken_service.signing import load_key_ring, load_service_secrets, rotate_signing_key
from apitoken_service.storage.accounts_sql import SqlAccountStore
from apitoken_service.storage.sql import SqlStorage, create_engine

log = logging.getLogger("apitoken_service.startup")


def default_kek_file(target: DatabaseTarget) -> Path | None:
    if target.sqlite_path is None:
        return None
    return target.sqlite_path.with_name(target.sqlite_path.name + ".kek")


def resolve_kek(settings: Settings, target: DatabaseTarget) -> KeyEncryptionKey:
    if settings.key_encryption_key is not None:
        return KeyEncryptionKey.from_base64(settings.key_encryption_key.get_secret_value())
    if settings.key_encryption_key_file is not None:
        return load_key_file(settings.key_encryption_key_file)
    path = default_kek_file(target)
    if path is None:
        raise KeyEncryptionError(
            "PostgreSQL needs a key-encryption key shared by every replica: set --kek-file or "
            "APITOKEN_SERVICE_KEY_ENCRYPTION_KEY (create one with `apitoken-service generate-kek`)"
        )
    if not path.exists():
        generate_key_file(path)
        log.info("generated a key-encryption key", extra={"path": str(path)})
    return load_key_file(path)


ISSUER_SETTING = "issuer"


def choose_issuer(recorded: str | None, explicit: str | None, fallback: str) -> str:
    """The issuer is recorded with the keys by the first `init` (or `serve`); later runs use
    it, and refuse an explicit one that differs, which would refuse every token issued so far."""
    if recorded is None:
        return explicit if explicit is not None else fallback
    if explicit is not None and explicit != recorded:
        raise IssuerMismatch(
            f"--issuer {explicit} differs from the issuer recorded in the database, {recorded}: "
            "every access token issued so far names that one. Leave out --issuer (and "
            "APITOKEN_SERVICE_ISSUER) to use it; a different issuer needs a new database"
        )
    return recorded


async def resolve_issuer(storage: SqlStorage, settings: Settings) -> str:
    explicit = settings.issuer if "issuer" in settings.model_fields_set else None
    fallback = settings.address_issuer or settings.issuer
    recorded = await storage.get_setting(ISSUER_SETTING)
    issuer = choose_issuer(recorded, explicit, fallback)
    if recorded is None:
        await storage.add_setting(ISSUER_SETTING, issuer)
        # A replica that started at the same moment may have recorded another one first.
        issuer = choose_issuer(await storage.get_setting(ISSUER_SETTING), explicit, fallback)
    return issuer


def policy_of(settings: Settings, issuer: str) -> TokenPolicy:
    return TokenPolicy(
        issuer=issuer,
        audience=settings.audience,
        access_token_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        rotation_grace=timedelta(seconds=settings.rotation_grace_seconds),
        rotate_refresh_tokens=settings.rotate_refresh_tokens,
    )


@dataclass
class OpenedService:
    service: TokenService
    storage: SqlStorage
    kek: KeyEncryptionKey
    accounts: AccountService
    # The access-token lifetime recorded with the signing key when serving; None for commands.
    signs_for: timedelta | None = None

    async def reload_keys(self, clock: Clock) -> None:
        self.service.keys.current = await load_key_ring(
            self.storage, self.kek, clock(), self.signs_for
        )

    async def rotate_signing_key(self, clock: Clock) -> str:
        """Sign with a new key from now on (here at once, on other replicas at their reload)."""
        kid = await rotate_signing_key(
            self.storage, self.kek, clock(), self.service.policy.access_token_ttl
        )
        await self.reload_keys(clock)
        return kid

    async def reload_keys_forever(self, clock: Clock, every_seconds: float) -> None:
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.reload_keys(clock)
            except Exception as exc:  # keep serving with the keys we have
                log.warning("reloading signing keys failed", extra={"error": type(exc).__name__})

    async def close(self) -> None:
        await self.storage.close()


async def open_service(settings: Settings, clock: Clock, *, signs: bool = False) -> OpenedService:
    """The service over its database; `signs` for a process that issues access tokens (serve,
    init), whose lifetime is then recorded with the signing key (see rotate_signing_key)."""
    signs_for = timedelta(seconds=settings.access_token_ttl_seconds) if signs else None
    target = parse_database_url(settings.database_url)
    kek = resolve_kek(settings, target)
    storage = SqlStorage(create_engine(target))
    try:
        version = await storage.migrate()
        now = clock()
        service_secrets = await load_service_secrets(storage, kek, now)
        ring = await load_key_ring(storage, kek, now, signs_for)
        # Commands that sign nothing (migrate, rotate-signing-key) neither need nor record it.
        issuer = await resolve_issuer(storage, settings) if signs else settings.issuer
    except BaseException:
        await storage.close()
        raise
    log.info(
        "database ready",
        extra={
            "database": target.render_safe(),
            "schemaVersion": version,
            "signingKey": ring.signer_kid,
        },
    )
    service = TokenService(
        storage, KeyRingHolder(ring), service_secrets, policy_of(settings, issuer)
    )
    accounts = AccountService(SqlAccountStore(storage.engine), storage)
    return OpenedService(service, storage, kek, accounts, signs_for)
