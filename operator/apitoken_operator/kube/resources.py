"""lightkube resource classes for the custom resources, and the operator's field manager."""

from typing import Final

from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from apitoken_operator.crd import names
from apitoken_operator.crd.resources import WorkspaceKind

# Server-side apply owner of everything the operator writes (Secrets and status).
FIELD_MANAGER: Final = "apitoken-operator"
# Owner of the credential Secret's finalizer alone, so the Secret writes (FIELD_MANAGER), which
# never name it, leave it alone.
PROTECTION_FIELD_MANAGER: Final = "apitoken-operator-protection"

ApiToken = create_namespaced_resource(names.GROUP, names.VERSION, names.KIND_API_TOKEN, "apitokens")
TokenWorkspace = create_namespaced_resource(
    names.GROUP, names.VERSION, names.KIND_TOKEN_WORKSPACE, "tokenworkspaces"
)
ClusterTokenWorkspace = create_global_resource(
    names.GROUP, names.VERSION, names.KIND_CLUSTER_TOKEN_WORKSPACE, "clustertokenworkspaces"
)

PLURALS: Final = {
    WorkspaceKind.TOKEN_WORKSPACE: "tokenworkspaces",
    WorkspaceKind.CLUSTER_TOKEN_WORKSPACE: "clustertokenworkspaces",
}
