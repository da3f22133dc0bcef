"""Apply an `examples/NN-topic/` folder against a running token service (make dev and tests).

Examples are written for a token service at its default address; here each TokenWorkspace is
pointed at the running one, and its credentials Secret is filled with a fresh bootstrap
credential, the way a platform team would create it from `apitoken-service init`.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.generic_resource import load_in_cluster_generic_resources
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from localkube.controlplane import REPO
from localkube.tokenservice import WorkspaceCredential

EXAMPLES = REPO / "examples"
TOKEN_WORKSPACE = ("apitoken.dev/v1alpha1", "TokenWorkspace")
DEFAULT_CREDENTIALS_KEY = "refresh_token"

Manifest = dict[str, Any]
# Called with the workspace id an example names; returns where to bootstrap from.
CredentialSource = Callable[[str], WorkspaceCredential]


def example_folders() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("[0-9][0-9]-*") if p.is_dir())


def load_manifests(folder: Path) -> list[Manifest]:
    docs: list[Manifest] = []
    for f in sorted(folder.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def is_token_workspace(doc: Manifest) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) == TOKEN_WORKSPACE


def point_at_service(doc: Manifest, url: str, workspace: str) -> Manifest:
    """A copy of a TokenWorkspace manifest that uses the token service at `url`."""
    doc = copy.deepcopy(doc)
    doc["spec"]["url"] = url
    doc["spec"]["workspace"] = workspace
    return doc


def credentials_secret(name: str, namespace: str, key: str, refresh_token: str) -> Secret:
    return Secret(
        metadata=ObjectMeta(name=name, namespace=namespace),
        type="Opaque",
        data={key: base64.b64encode(refresh_token.encode()).decode()},
    )


def ensure_namespace(client: Client, name: str) -> None:
    client.apply(Namespace(metadata=ObjectMeta(name=name)), force=True)


def apply_example(
    client: Client, folder: Path, namespace: str, url: str, credentials: CredentialSource
) -> list[Manifest]:
    """Server-side apply `folder`'s manifests into `namespace`, each TokenWorkspace pointed at
    `url` and preceded by its credentials Secret. Returns the manifests as applied."""
    # The CRDs' kinds become known to lightkube's loader from the cluster itself.
    load_in_cluster_generic_resources(client)
    applied: list[Manifest] = []
    for doc in load_manifests(folder):
        doc.setdefault("metadata", {})["namespace"] = namespace  # examples are namespaced
        if is_token_workspace(doc):
            credential = credentials(doc["spec"]["workspace"])
            doc = point_at_service(doc, url, credential.workspace)
            ref = doc["spec"]["credentialsSecretRef"]
            key = ref.get("key", DEFAULT_CREDENTIALS_KEY)
            secret = credentials_secret(ref["name"], namespace, key, credential.refresh_token)
            client.apply(secret, force=True)
        client.apply(from_dict(doc), force=True)
        applied.append(doc)
    return applied
