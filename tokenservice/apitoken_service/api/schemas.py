"""Request and response bodies (camelCase JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from apitoken_service.clock import rfc3339
from apitoken_service.domain.identifiers import USER_PATTERN, has_forbidden_characters
from apitoken_service.domain.records import MemberRecord, TokenRecord
from apitoken_service.domain.rules import (
    MAX_BULK_IDS,
    MAX_EXTERNAL_REF_LENGTH,
    MAX_LIFETIME_DAYS,
    MAX_NAME_LENGTH,
    MIN_LIFETIME_DAYS,
    effective_status,
)
from apitoken_service.domain.service import BulkResult, IssuedToken


def _printable(value: str) -> str:
    if has_forbidden_characters(value):
        raise ValueError("must not contain control characters or bidirectional overrides")
    return value


def _integral_float(value: object) -> object:
    """JSON (RFC 8259) has one number type, and JSON Schema's `integer` includes 290.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


LifetimeDays = Annotated[
    int,
    Field(strict=True, ge=MIN_LIFETIME_DAYS, le=MAX_LIFETIME_DAYS),
    BeforeValidator(_integral_float),
]
TokenName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
    Field(strict=True),
    AfterValidator(_printable),
]
ExternalRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EXTERNAL_REF_LENGTH),
    AfterValidator(_printable),
]
UserName = Annotated[str, StringConstraints(pattern=USER_PATTERN), Field(strict=True)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateToken(_Input):
    name: TokenName
    lifetimeDays: LifetimeDays
    externalRef: ExternalRef | None = None


class BulkRequest(_Input):
    action: Literal["disable", "delete"]
    ids: Annotated[
        list[Annotated[str, StringConstraints(max_length=64)]],
        Field(min_length=1, max_length=MAX_BULK_IDS),
    ]


class AddMember(_Input):
    user: UserName
    role: Literal["member", "admin"] = "member"
    lifetimeDays: LifetimeDays = 30


class Token(BaseModel):
    id: str
    name: str
    workspace: str
    owner: str
    status: Literal["active", "disabled", "expired"]
    createdAt: str
    expiresAt: str
    lastUsedAt: str | None
    externalRef: str | None

    @classmethod
    def of(cls, token: TokenRecord, now: datetime) -> Token:
        return cls(
            id=token.id,
            name=token.name,
            workspace=token.workspace,
            owner=token.owner,
            status=effective_status(token, now),
            createdAt=rfc3339(token.created_at),
            expiresAt=rfc3339(token.expires_at),
            lastUsedAt=None if token.last_used_at is None else rfc3339(token.last_used_at),
            externalRef=token.external_ref,
        )


class CreatedToken(Token):
    accessToken: str
    accessTokenExpiresAt: str
    refreshToken: str

    @classmethod
    def of_issued(cls, issued: IssuedToken, now: datetime) -> CreatedToken:
        return cls(
            **Token.of(issued.token, now).model_dump(),
            accessToken=issued.access_token.value,
            accessTokenExpiresAt=rfc3339(issued.access_token.expires_at),
            refreshToken=issued.refresh_token,
        )


class TokenPage(BaseModel):
    items: list[Token]
    next: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class BulkItem(BaseModel):
    id: str
    ok: bool
    result: Literal["disabled", "deleted", "notFound"]

    @classmethod
    def of(cls, result: BulkResult) -> BulkItem:
        return cls(id=result.id, ok=result.ok, result=result.result)


class BulkResponse(BaseModel):
    results: list[BulkItem]


class Member(BaseModel):
    workspace: str
    user: str
    role: Literal["member", "admin"]
    createdAt: str

    @classmethod
    def of(cls, member: MemberRecord) -> Member:
        return cls(
            workspace=member.workspace,
            user=member.user,
            role=member.role,
            createdAt=rfc3339(member.created_at),
        )


class CreatedMember(Member):
    tokenId: str
    accessToken: str
    accessTokenExpiresAt: str
    refreshToken: str
    refreshTokenExpiresAt: str


class MemberPage(BaseModel):
    items: list[Member]
    next: str | None


class OAuthErrorBody(BaseModel):
    error: str
    error_description: str


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str
    refresh_token_expires_in: int
