"""API group, kinds, and the labels and annotations the operator reads and writes."""

from typing import Final

GROUP: Final = "apitoken.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

KIND_API_TOKEN: Final = "ApiToken"
KIND_TOKEN_WORKSPACE: Final = "TokenWorkspace"
KIND_CLUSTER_TOKEN_WORKSPACE: Final = "ClusterTokenWorkspace"

# Kopf's own bookkeeping lives under our group (finalizer, progress and diff-base storage);
# the ApiTokens' runs use the same finalizer name.
FINALIZER: Final = f"{GROUP}/finalizer"

# On the operator's credential Secret of a workspace, like kubernetes.io/pvc-protection: kept
# while ApiTokens use the workspace, so deleting the namespace (which deletes every Secret at
# once) leaves their finalizers a credential to clean up at the token service with.
FINALIZER_CREDENTIAL_IN_USE: Final = f"{GROUP}/credential-in-use"

# On the managed Secret.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "apitoken-operator"
ANNOTATION_TOKEN_ID: Final = f"{GROUP}/token-id"
ANNOTATION_DATA_HASH: Final = f"{GROUP}/data-hash"
# Lets the operator rebuild the renewal schedule from the Secret if the status was lost
# (a restore from backup drops the status subresource).
ANNOTATION_REFRESH_EXPIRES_AT: Final = f"{GROUP}/refresh-token-expires-at"
# The access token's schedule, written with its values by the same apply (not in the status: a
# status write per refresh cost a request and a watch event per refresh, docs/benchmarks.md):
# when the operator obtained it (its own clock, whole seconds), and when it plans the refresh.
ANNOTATION_REFRESHED_AT: Final = f"{GROUP}/refreshed-at"
ANNOTATION_NEXT_REFRESH_AT: Final = f"{GROUP}/next-refresh-at"

# On the ApiToken, set by people.
# Any new value asks for an immediate re-issue, like `cmctl renew` (compared with
# status.lastReissueRequest, so each value is handled once).
ANNOTATION_REISSUE: Final = f"{GROUP}/reissue"
# "true" releases the finalizer without cleaning up at the token service (the token stays
# valid until it expires): for a service that is gone for good.
ANNOTATION_ABANDON: Final = f"{GROUP}/abandon"

# On the pod template of spec.rolloutRestartTargets: set when the token is re-issued, which
# rolls the workload out again (like kubectl's kubectl.kubernetes.io/restartedAt).
ANNOTATION_RESTARTED_AT: Final = f"{GROUP}/restartedAt"

# Keys of the managed Secret.
KEY_ACCESS_TOKEN: Final = "access_token"
KEY_REFRESH_TOKEN: Final = "refresh_token"
KEY_TOKEN_TYPE: Final = "token_type"
KEY_EXPIRES_AT: Final = "expires_at"
