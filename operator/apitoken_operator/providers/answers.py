"""What a provider answers, in memory: token pairs and token metadata. No I/O.

Shared by the clients that produce these and by the core and executor that read them; a
value's repr never shows a token.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """UTC, whole seconds, with a Z: the form Kubernetes and the token service use."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class TokenValues:
    """A token pair in memory; its repr never shows the values."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    access_token_expires_at: datetime


@dataclass(frozen=True)
class TokenMetadata:
    id: str
    name: str
    status: str
    expires_at: datetime
    external_ref: str | None
    owner: str | None = None


@dataclass(frozen=True)
class CreatedToken:
    metadata: TokenMetadata
    values: TokenValues

    @property
    def refresh_token_expires_at(self) -> datetime:
        return self.metadata.expires_at


@dataclass(frozen=True)
class RefreshResult:
    values: TokenValues
    # From the non-standard refresh_token_expires_in when the endpoint sends it.
    refresh_token_expires_at: datetime | None
    # False when the endpoint did not rotate (no refresh_token in the answer): the values then
    # carry the refresh token that was presented.
    rotated: bool
    obtained_at: datetime = field(compare=False)
