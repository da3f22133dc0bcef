"""Typed views of the custom resources (pydantic v2), with the defaults computed here.

The CRDs carry no schema defaults, so that what the apiserver stores is exactly what Git holds
and GitOps tools show no diff; every default lives in this module (`resolve`) instead.
Field names follow the CRDs (camelCase aliases); `tests/unit/test_crd_schemas.py` checks that
the two agree.
"""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from apitoken_operator.crd import names
from apitoken_operator.crd.durations import parse_duration

DEFAULT_LIFETIME_DAYS: Final = 90
DEFAULT_REFRESH_PERCENT: Final = 75
DEFAULT_SECRET_KEY: Final = "refresh_token"


class _Model(BaseModel):
    # Unknown fields are ignored: the apiserver already prunes them, and an older operator must
    # keep working on objects written for a newer schema.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )

    def to_json(self) -> dict[str, Any]:
        """The object as the Kubernetes API wants it: camelCase, RFC 3339, without the fields
        that are unset or at their default (nulls, zero counters, empty lists)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


class WorkspaceKind(StrEnum):
    TOKEN_WORKSPACE = names.KIND_TOKEN_WORKSPACE
    CLUSTER_TOKEN_WORKSPACE = names.KIND_CLUSTER_TOKEN_WORKSPACE


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    DISABLE = "Disable"
    ORPHAN = "Orphan"


class Provider(StrEnum):
    APITOKEN = "apitoken"
    OAUTH2 = "oauth2"


def _is_duration(text: str) -> str:
    parse_duration(text)
    return text


GoDuration = Annotated[str, AfterValidator(_is_duration)]


class WorkspaceRef(_Model):
    name: str = Field(min_length=1)
    kind: WorkspaceKind | None = None

    @property
    def resolved_kind(self) -> WorkspaceKind:
        return self.kind or WorkspaceKind.TOKEN_WORKSPACE


class SecretTemplate(_Model):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class SecretKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str | None = None

    @property
    def resolved_key(self) -> str:
        return self.key or DEFAULT_SECRET_KEY


class NamespacedSecretKeyRef(SecretKeyRef):
    namespace: str | None = None


class RolloutRestartKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class RolloutRestartTarget(_Model):
    """A workload in the ApiToken's namespace restarted (like `kubectl rollout restart`) when
    the token is re-issued."""

    kind: RolloutRestartKind
    name: str = Field(min_length=1, max_length=253)


class ApiTokenSpec(_Model):
    workspace_ref: WorkspaceRef
    token_name: str | None = None
    lifetime_days: int | None = Field(default=None, ge=1, le=365)
    secret_name: str | None = None
    secret_template: SecretTemplate | None = None
    refresh_percent: int | None = Field(default=None, ge=10, le=95)
    renew_before: GoDuration | None = None
    disabled: bool = False
    deletion_policy: DeletionPolicy | None = None
    refresh_token_secret_ref: SecretKeyRef | None = None
    rollout_restart_targets: tuple[RolloutRestartTarget, ...] = ()

    def resolve(self, namespace: str, name: str) -> "ResolvedApiTokenSpec":
        """Apply the defaults documented in docs/usage.md."""
        lifetime = self.lifetime_days or DEFAULT_LIFETIME_DAYS
        renew_before = (
            parse_duration(self.renew_before)
            if self.renew_before is not None
            else timedelta(days=lifetime) / 3
        )
        template = self.secret_template or SecretTemplate()
        return ResolvedApiTokenSpec(
            workspace_name=self.workspace_ref.name,
            workspace_kind=self.workspace_ref.resolved_kind,
            token_name=self.token_name or f"{namespace}/{name}",
            lifetime_days=lifetime,
            secret_name=self.secret_name or name,
            secret_labels=dict(template.labels),
            secret_annotations=dict(template.annotations),
            refresh_percent=self.refresh_percent or DEFAULT_REFRESH_PERCENT,
            renew_before=renew_before,
            disabled=self.disabled,
            deletion_policy=self.deletion_policy or DeletionPolicy.DELETE,
            import_ref=self.refresh_token_secret_ref,
            rollout_restart_targets=self.rollout_restart_targets,
        )


class ResolvedApiTokenSpec(_Model):
    """An ApiToken's spec with every default applied: what the reconcile core works from."""

    workspace_name: str
    workspace_kind: WorkspaceKind
    token_name: str
    lifetime_days: int
    secret_name: str
    secret_labels: dict[str, str]
    secret_annotations: dict[str, str]
    refresh_percent: int
    renew_before: timedelta
    disabled: bool
    deletion_policy: DeletionPolicy
    import_ref: SecretKeyRef | None
    rollout_restart_targets: tuple[RolloutRestartTarget, ...] = ()


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int | None = None


class RetiringToken(_Model):
    """A replaced token still to be disabled or deleted, and the workspace it lives in."""

    id: str
    workspace: str | None = None  # "Kind/name"; None: the ApiToken's current workspace


class RolloutRestartStatus(_Model):
    """Restarts of spec.rolloutRestartTargets: one per re-issued token."""

    # The token the targets were restarted for (the first token needs no restart: recorded).
    token_id: str | None = None
    # The restart annotation's value of the last attempt; a retry reuses it (no second rollout).
    restarted_at: datetime | None = None
    last_failure_time: datetime | None = None
    last_failure_message: str | None = None


class ApiTokenStatus(_Model):
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    token_id: str | None = None
    token_workspace: str | None = None
    retiring_tokens: tuple[RetiringToken, ...] = ()
    secret_name: str | None = None
    # The access token's own times (expiry, when obtained, next refresh) are on the Secret, not
    # here: they change on every refresh (docs/usage.md, "Status").
    refresh_token_expires_at: datetime | None = None
    renewal_time: datetime | None = None
    failed_refresh_attempts: int = 0
    last_failure_time: datetime | None = None
    last_failure_reason: str | None = None
    last_failure_message: str | None = None
    issued_spec_hash: str | None = None
    last_reissue_request: str | None = None
    imported_token_digest: str | None = None
    # Not before this time may the provider be called again (its Retry-After).
    retry_not_before: datetime | None = None
    # Digest of the workspace's client settings (and client secret) the provider rejected
    # (invalid_client) or that lacked the client secret: not tried again until they change.
    rejected_client_digest: str | None = None
    rollout_restart: RolloutRestartStatus | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class LabelSelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Model):
    key: str
    operator: LabelSelectorOperator
    values: tuple[str, ...] = ()


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


class AllowedNamespaces(_Model):
    names: tuple[str, ...] = ()
    selector: LabelSelector | None = None


class ClientAuthMethod(StrEnum):
    """How the client authenticates at the token and revocation endpoints (RFC 8414 names)."""

    NONE = "none"
    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"


DEFAULT_CLIENT_SECRET_KEY: Final = "client_secret"
DEFAULT_ACCESS_TOKEN_LIFETIME: Final = timedelta(minutes=5)
# Form parameters the operator sets itself; extraParams may not name them.
RESERVED_PARAMS: Final = frozenset(
    {"grant_type", "refresh_token", "client_id", "client_secret", "scope", "token"}
)


class ClientSecretRef(_Model):
    name: str = Field(min_length=1)
    key: str | None = None

    @property
    def resolved_key(self) -> str:
        return self.key or DEFAULT_CLIENT_SECRET_KEY


def _no_reserved(params: dict[str, str]) -> dict[str, str]:
    taken = sorted(RESERVED_PARAMS & params.keys())
    if taken:
        raise ValueError(f"extraParams may not set {', '.join(taken)}")
    return params


class OAuth2Settings(_Model):
    token_endpoint: str | None = None
    issuer: str | None = None
    revocation_endpoint: str | None = None
    client_id: str | None = None
    client_auth_method: ClientAuthMethod | None = None
    client_secret_ref: ClientSecretRef | None = None
    scope: str | None = None
    extra_params: Annotated[dict[str, str], AfterValidator(_no_reserved)] = Field(
        default_factory=dict
    )
    default_access_token_lifetime: GoDuration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "OAuth2Settings":
        # The same rules as the CRD's CEL validations, for objects that predate them.
        if self.token_endpoint is None and self.issuer is None:
            raise ValueError("oauth2 needs tokenEndpoint or issuer")
        method = self.resolved_client_auth_method
        if method is not ClientAuthMethod.NONE and self.client_secret_ref is None:
            raise ValueError(f"clientAuthMethod {method} needs clientSecretRef")
        if method is not ClientAuthMethod.NONE and not self.client_id:
            raise ValueError(f"clientAuthMethod {method} needs clientId")
        if method is ClientAuthMethod.NONE and self.client_secret_ref is not None:
            raise ValueError("clientAuthMethod none sends no secret: remove clientSecretRef")
        return self

    @property
    def resolved_client_auth_method(self) -> ClientAuthMethod:
        if self.client_auth_method is not None:
            return self.client_auth_method
        if self.client_secret_ref is not None:
            return ClientAuthMethod.CLIENT_SECRET_BASIC
        return ClientAuthMethod.NONE

    @property
    def resolved_default_lifetime(self) -> timedelta:
        if self.default_access_token_lifetime is None:
            return DEFAULT_ACCESS_TOKEN_LIFETIME
        return parse_duration(self.default_access_token_lifetime)


class TokenWorkspaceSpec(_Model):
    provider: Provider | None = None
    url: str | None = None
    workspace: str | None = None
    credentials_secret_ref: SecretKeyRef | None = None
    ca_bundle: str | None = None
    oauth2: OAuth2Settings | None = None

    @property
    def resolved_provider(self) -> Provider:
        return self.provider or Provider.APITOKEN

    @property
    def token_endpoint(self) -> str | None:
        """Where refresh grants go: the oauth2 endpoint (None: discovered from its issuer), or
        the token service's own."""
        if self.oauth2 is not None:
            return self.oauth2.token_endpoint
        if self.url is not None:
            return self.url.rstrip("/") + "/oauth2/token"
        return None

    @property
    def client_id(self) -> str | None:
        return self.oauth2.client_id if self.oauth2 is not None else None

    @property
    def revocation_configured(self) -> bool:
        """Whether a revocation endpoint is set or may be discovered from the issuer."""
        settings = self.oauth2
        return settings is not None and bool(settings.revocation_endpoint or settings.issuer)


class ClusterTokenWorkspaceSpec(TokenWorkspaceSpec):
    credentials_secret_ref: NamespacedSecretKeyRef | None = None
    allowed_namespaces: AllowedNamespaces | None = None


class TokenWorkspaceStatus(_Model):
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    user: str | None = None
    credential_secret_name: str | None = None
    credential_token_id: str | None = None
    credential_expires_at: datetime | None = None
    credential_renewal_time: datetime | None = None
    bootstrap_digest: str | None = None
    last_refresh_time: datetime | None = None
    failed_attempts: int = 0
    last_failure_time: datetime | None = None
    last_failure_reason: str | None = None
    last_failure_message: str | None = None

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def status_patch(old: _Model, new: _Model) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) from one status to another: changed and new fields, and
    null for fields that went away. Empty when nothing changed, so nothing is written."""
    before, after = old.to_json(), new.to_json()
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    patch.update({k: None for k in before if k not in after})
    return patch
