"""Condition types and CamelCase reasons, as documented in docs/usage.md."""

from typing import Final

# Condition types (kstatus: Reconciling and Stalled are "abnormal-true" and are removed when
# they no longer hold).
READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# Ready=True
TOKEN_READY: Final = "TokenReady"

# Work in progress (Reconciling=True).
GENERATING: Final = "Generating"
IMPORTING: Final = "Importing"
REFRESHING: Final = "Refreshing"
REISSUING: Final = "Reissuing"
UPDATING_SECRET: Final = "UpdatingSecret"
DISABLING: Final = "Disabling"
CLEANING_UP: Final = "CleaningUp"

# Why a token is re-issued (the Reissuing condition's message names it; events carry it).
RENEWAL_DUE: Final = "RenewalDue"
LIFETIME_CHANGED: Final = "LifetimeChanged"
TOKEN_NAME_CHANGED: Final = "TokenNameChanged"
WORKSPACE_CHANGED: Final = "WorkspaceChanged"
REISSUE_REQUESTED: Final = "ReissueRequested"
SECRET_DELETED: Final = "SecretDeleted"
SECRET_MODIFIED: Final = "SecretModified"
TOKEN_REVOKED: Final = "TokenRevoked"
REFRESH_TOKEN_EXPIRED: Final = "RefreshTokenExpired"

# Ready=False, waiting for a person (Stalled=True).
DISABLED: Final = "Disabled"
SECRET_CONFLICT: Final = "SecretConflict"
WORKSPACE_NOT_FOUND: Final = "WorkspaceNotFound"
NOT_ALLOWED: Final = "NotAllowed"
INVALID_SPEC: Final = "InvalidSpec"
IMPORT_SECRET_MISSING: Final = "ImportSecretMissing"
IMPORT_REQUIRED: Final = "ImportRequired"

# Failures of calls, retried with backoff (Reconciling=True; Ready stays True while the access
# token in the Secret is still valid).
SERVICE_UNREACHABLE: Final = "ServiceUnreachable"
SERVICE_ERROR: Final = "ServiceError"
UNAUTHORIZED: Final = "Unauthorized"
BAD_REQUEST: Final = "BadRequest"
NOT_FOUND: Final = "NotFound"
REFRESH_TOKEN_REJECTED: Final = "RefreshTokenRejected"
# Refresh-only mode: the token endpoint refused the client settings (invalid_client), or the
# client secret they name is missing. Not retried until the settings or the secret change.
CLIENT_REJECTED: Final = "ClientRejected"
CLIENT_SECRET_MISSING: Final = "ClientSecretMissing"
# A request went out and its answer was lost (read timeout, dropped connection).
RESPONSE_LOST: Final = "ResponseLost"
WORKSPACE_NOT_READY: Final = "WorkspaceNotReady"
# The ApiToken's namespace is being deleted: no new token is issued (no Secret could hold it).
NAMESPACE_TERMINATING: Final = "NamespaceTerminating"
ACCESS_TOKEN_EXPIRED: Final = "AccessTokenExpired"
# A Secret write still refused after its in-memory retries (the values stay in memory).
SECRET_WRITE_FAILED: Final = "SecretWriteFailed"
CLEANUP_PENDING: Final = "CleanupPending"

# Refresh-only mode: the refresh token was revoked at the provider (RFC 7009), or could not be
# because the workspace names no revocation endpoint (events).
REVOKED: Final = "Revoked"
NOT_REVOKED: Final = "NotRevoked"

# Workspace conditions.
CREDENTIALS_MISSING: Final = "CredentialsMissing"
WORKSPACE_READY: Final = "WorkspaceReady"

# A token found at the service by externalRef that no Secret holds (a crash or a re-issue left
# it behind); it is disabled or deleted.
UNUSED_TOKEN: Final = "UnusedToken"
# A token replaced by a re-issue, retired after the Secret switched to its successor.
TOKEN_REPLACED: Final = "TokenReplaced"

# spec.rolloutRestartTargets: the workloads were restarted for a re-issued token (event), or
# a restart failed (event and Reconciling; retried after the recheck interval).
ROLLOUT_RESTARTED: Final = "RolloutRestarted"
ROLLOUT_RESTART_FAILED: Final = "RolloutRestartFailed"
