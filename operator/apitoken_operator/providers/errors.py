"""Errors of the token service and token endpoints, as the operator acts on them.

Each carries a CamelCase `reason` (for conditions and status) and whether a retry with backoff
may help. Messages are built from status codes and the server's problem or error descriptions,
with any token value the client knows replaced, so they are safe for logs, events and status.
"""

from typing import ClassVar

from apitoken_operator.crd import reasons


class ServiceError(Exception):
    reason: ClassVar[str] = reasons.SERVICE_ERROR
    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class RetryableError(ServiceError):
    retryable = True


class Unreachable(RetryableError):
    """No connection (refused, DNS, TLS)."""

    reason = reasons.SERVICE_UNREACHABLE


class Timeout(RetryableError):
    reason = reasons.SERVICE_UNREACHABLE


class ResponseLost(Timeout):
    """The request went out and no answer came back (a read timeout, a connection dropped
    mid-answer): the provider may have acted on it, such as rotating a refresh token. The
    reason stays ServiceUnreachable; refresh-only mode records it as ResponseLost."""


class ServerError(RetryableError):
    """5xx, or 429 rate limiting (with retry_after when the server said)."""

    reason = reasons.SERVICE_ERROR


class InvalidGrant(ServiceError):
    """The refresh token is disabled, deleted, expired or was replayed (RFC 6749 invalid_grant)."""

    reason = reasons.REFRESH_TOKEN_REJECTED


class Unauthorized(ServiceError):
    """401/403: the operator's credential is not accepted for this workspace or action."""

    reason = reasons.UNAUTHORIZED


class ClientRejected(Unauthorized):
    """The token endpoint refused the client (invalid_client, unauthorized_client, or a 401):
    client id, authentication method or client secret is wrong. Retrying cannot help."""

    reason = reasons.CLIENT_REJECTED


class ClientSecretMissing(ServiceError):
    """The workspace's clientSecretRef names a Secret or key that is not there."""

    reason = reasons.CLIENT_SECRET_MISSING


class NotFound(ServiceError):
    reason = reasons.NOT_FOUND


class BadRequest(ServiceError):
    """The service refused the request's content (problem+json detail, or an OAuth error)."""

    reason = reasons.BAD_REQUEST


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every known token value in `text`; a server may echo what it was sent."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
