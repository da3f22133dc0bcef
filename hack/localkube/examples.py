"""Apply an `examples/NN-topic/` folder against a running token service (make dev and tests).

Examples are written for a token service at its default address; here each TokenWorkspace is
pointed at the running one, and its credentials Secret is filled with a fresh bootstrap
credential, the way a platform team would create it from `apitoken-service init`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.core.resource import NamespacedResource
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


def is_refresh_only(folder: Path) -> bool:
    """An example of refresh-only mode (provider oauth2): applied against a foreign token
    server, not the token service (tests/e2e/test_examples.py)."""
    return any(
        is_token_workspace(d) and (d.get("spec") or {}).get("provider") == "oauth2"
        for d in load_manifests(folder)
    )


def in_apply_order(docs: list[Manifest]) -> list[Manifest]:
    """Workspaces first, so that ApiTokens find theirs; otherwise as written. Deleting in the
    reverse order lets ApiTokens' finalizers use their workspace to the end."""
    return sorted(docs, key=lambda d: not is_token_workspace(d))


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
    client: Client,
    folder: Path,
    namespace: str,
    url: str,
    credentials: CredentialSource,
    image: str | None = None,
) -> list[Manifest]:
    """Server-side apply `folder`'s manifests into `namespace`, each TokenWorkspace pointed at
    `url` and preceded by its credentials Secret. Returns the manifests as applied."""
    # The CRDs' kinds become known to lightkube's loader from the cluster itself.
    load_in_cluster_generic_resources(client)
    applied: list[Manifest] = []
    for doc in in_apply_order(load_manifests(folder)):
        doc.setdefault("metadata", {})["namespace"] = namespace  # examples are namespaced
        if is_token_workspace(doc):
            credential = credentials(doc["spec"]["workspace"])
            doc = point_at_service(doc, url, credential.workspace)
            ref = doc["spec"]["credentialsSecretRef"]
            key = ref.get("key", DEFAULT_CREDENTIALS_KEY)
            secret = credentials_secret(ref["name"], namespace, key, credential.refresh_token)
            client.apply(secret, force=True)
        if image is not None and doc["kind"] == "Deployment":
            # The local node has no registry: its Pods run images that `make images` built.
            for c in doc["spec"]["template"]["spec"]["containers"]:
                c["image"], c["imagePullPolicy"] = image, "Never"
        client.apply(from_dict(doc), force=True)
        applied.append(doc)
    return applied


def delete_example(client: Client, applied: list[Manifest], timeout: float = 60.0) -> bool:
    """Delete what `apply_example` applied, last first, each one gone before the next: ApiTokens
    before their TokenWorkspace, whose credential their finalizers need. False on timeout."""
    deadline = time.monotonic() + timeout
    for doc in reversed(applied):
        # Examples hold namespaced objects only (see apply_example).
        kind = cast(type[NamespacedResource], type(from_dict(doc)))
        name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
        with contextlib.suppress(ApiError):  # already gone
            client.delete(kind, name, namespace=namespace)
        while _exists(client, kind, name, namespace):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
    return True


def _exists(client: Client, kind: type[NamespacedResource], name: str, namespace: str) -> bool:
    try:
        client.get(kind, name, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True
