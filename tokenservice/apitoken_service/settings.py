"""Service settings, from arguments or `APITOKEN_SERVICE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///apitoken-service.db"


class IssuerMismatch(RuntimeError):
    """An explicit issuer differs from the one recorded in the database (startup.py)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APITOKEN_SERVICE_", extra="forbid")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="sqlite:///path/file.db or postgresql://user@host:port/db",
    )
    issuer: str = Field(
        default="http://127.0.0.1:8080",
        description="`iss` of access tokens and base of the advertised endpoint URLs",
    )
    address_issuer: str | None = Field(
        default=None,
        description="set by `serve` from --host/--port: the issuer when none is recorded or given",
    )
    audience: str = Field(default="apitoken-api", description="`aud` of access tokens")
    access_token_ttl_seconds: int = Field(default=3600, ge=1, le=86_400)
    rotation_grace_seconds: int = Field(
        default=60, ge=0, le=3600, description="how long a rotated refresh token is accepted"
    )
    rotate_refresh_tokens: bool = True
    token_rate_limit_per_second: float = Field(
        default=50.0, ge=0, description="per client address on /oauth2/token; 0 disables"
    )
    token_rate_limit_burst: int = Field(default=200, ge=1)
    max_request_bytes: int = Field(default=65_536, ge=1024)
    key_encryption_key_file: Path | None = Field(
        default=None,
        description="file holding the key-encryption key (base64, 32 bytes); by default "
        "`<sqlite file>.kek`, created 0600 when missing",
    )
    key_encryption_key: SecretStr | None = Field(
        default=None, description="the key-encryption key itself (base64), instead of a file"
    )
    key_reload_seconds: float = Field(
        default=30.0, gt=0, description="how often replicas pick up rotated signing keys"
    )
    access_log: bool = True
    token_grant_log_every: int = Field(
        default=100,
        ge=1,
        description="access-log one successful refresh grant in this many (failures always); "
        "the metrics count every request",
    )
    log_level: str = "INFO"

    @field_validator("issuer")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")
