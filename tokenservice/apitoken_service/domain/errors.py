"""Domain errors. Messages never carry token values."""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Unauthenticated(DomainError):
    status = 401
    title = "Unauthorized"


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error; one subclass per error code."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class RefreshTokenReplayed(InvalidGrant):
    """A rotated refresh token came back after the grace period; its API token is now disabled."""


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    error = "unsupported_token_type"
