"""The managed Secret: its data, its fingerprint and its manifest, built without I/O.

The data hash is SHA-256 over the Secret's data with the ApiToken's UID as a salt. The refresh
token alone carries at least 256 bits of randomness, so the hash reveals nothing about the
values; an unkeyed hash needs no extra key to distribute and stays stable across restarts and
replicas, so a restart never looks like an edit.
"""

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apitoken_operator.crd import names
from apitoken_operator.providers.answers import TokenValues, parse_rfc3339, rfc3339

_STRIPPED_KEYS = (names.KEY_TOKEN_TYPE, names.KEY_EXPIRES_AT)


@dataclass(frozen=True)
class ObservedSecret:
    """A Secret as read from the cluster, decoded; its repr never shows the data."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
    # UIDs of the apitoken.dev resources (ApiTokens, workspaces) in its ownerReferences.
    owner_uids: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return self.labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY_VALUE

    @property
    def token_id(self) -> str | None:
        return self.annotations.get(names.ANNOTATION_TOKEN_ID)

    @property
    def holds_tokens(self) -> bool:
        return names.KEY_REFRESH_TOKEN in self.data or names.KEY_ACCESS_TOKEN in self.data

    @property
    def access_token_expires_at(self) -> datetime | None:
        return _parse_or_none(self.data.get(names.KEY_EXPIRES_AT))

    @property
    def refresh_token_expires_at(self) -> datetime | None:
        return _parse_or_none(self.annotations.get(names.ANNOTATION_REFRESH_EXPIRES_AT))

    @property
    def refreshed_at(self) -> datetime | None:
        """When the operator obtained the access token: written with it, by the same apply."""
        return _parse_or_none(self.annotations.get(names.ANNOTATION_REFRESHED_AT))

    @property
    def next_refresh_at(self) -> datetime | None:
        return _parse_or_none(self.annotations.get(names.ANNOTATION_NEXT_REFRESH_AT))


def _parse_or_none(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def token_data(values: TokenValues) -> dict[str, str]:
    return {
        names.KEY_ACCESS_TOKEN: values.access_token,
        names.KEY_REFRESH_TOKEN: values.refresh_token,
        names.KEY_TOKEN_TYPE: values.token_type,
        names.KEY_EXPIRES_AT: rfc3339(values.access_token_expires_at),
    }


def disabled_data(data: Mapping[str, str]) -> dict[str, str]:
    """What a disabled token's Secret keeps: token_type and expires_at, no usable token."""
    return {k: v for k, v in data.items() if k in _STRIPPED_KEYS}


def salted_digest(salt: str, value: str) -> str:
    """A digest safe to store for a high-entropy value (never the value itself)."""
    return "sha256:" + hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()


def data_hash(uid: str, data: Mapping[str, str]) -> str:
    """Fingerprint of the Secret's data; any edit of a key or value changes it."""
    # Length-prefixed so that moving bytes between keys and values changes the hash too.
    canonical = "".join(f"{len(k)}:{k}{len(v)}:{v}" for k, v in sorted(data.items()))
    return salted_digest(uid, canonical)


def data_intact(uid: str, secret: ObservedSecret) -> bool:
    return secret.annotations.get(names.ANNOTATION_DATA_HASH) == data_hash(uid, secret.data)


@dataclass(frozen=True)
class Owner:
    """The resource a Secret belongs to: an ApiToken, or a workspace for its credential."""

    name: str
    uid: str
    kind: str = names.KIND_API_TOKEN


@dataclass(frozen=True)
class SecretShape:
    """Everything about the managed Secret except its data."""

    namespace: str
    name: str
    owner: Owner
    set_owner_reference: bool
    token_id: str
    refresh_token_expires_at: datetime | None
    template_labels: Mapping[str, str]
    template_annotations: Mapping[str, str]
    # The access token's schedule (names.ANNOTATION_REFRESHED_AT, _NEXT_REFRESH_AT); None for
    # a Secret without a usable access token (a disabled token, a workspace credential).
    refreshed_at: datetime | None = None
    next_refresh_at: datetime | None = None

    def labels(self) -> dict[str, str]:
        # The operator's label wins over the template; the ApiToken's own labels never appear.
        return {**self.template_labels, names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE}

    def annotations(self, data: Mapping[str, str]) -> dict[str, str]:
        ours = {
            names.ANNOTATION_TOKEN_ID: self.token_id,
            names.ANNOTATION_DATA_HASH: data_hash(self.owner.uid, data),
        }
        for key, moment in (
            (names.ANNOTATION_REFRESH_EXPIRES_AT, self.refresh_token_expires_at),
            (names.ANNOTATION_REFRESHED_AT, self.refreshed_at),
            (names.ANNOTATION_NEXT_REFRESH_AT, self.next_refresh_at),
        ):
            if moment is not None:
                ours[key] = rfc3339(moment)
        return {**self.template_annotations, **ours}

    def owner_references(self) -> list[dict[str, Any]]:
        if not self.set_owner_reference:
            return []
        return [
            {
                "apiVersion": names.API_VERSION,
                "kind": self.owner.kind,
                "name": self.owner.name,
                "uid": self.owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def build_secret(shape: SecretShape, data: Mapping[str, str]) -> dict[str, Any]:
    """The full manifest, for a server-side apply by the operator's field manager."""
    metadata: dict[str, Any] = {
        "name": shape.name,
        "namespace": shape.namespace,
        "labels": shape.labels(),
        "annotations": shape.annotations(data),
    }
    owners = shape.owner_references()
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def metadata_drifted(shape: SecretShape, secret: ObservedSecret) -> bool:
    """True when the Secret lacks a label, annotation or owner reference we want, or keeps an
    owner reference we do not (others' additions are left alone)."""
    want_labels = shape.labels()
    want_annotations = shape.annotations(secret.data)
    if any(secret.labels.get(k) != v for k, v in want_labels.items()):
        return True
    if any(secret.annotations.get(k) != v for k, v in want_annotations.items()):
        return True
    return (shape.owner.uid in secret.owner_uids) != shape.set_owner_reference


def observe(manifest: Mapping[str, Any]) -> ObservedSecret:
    """The ObservedSecret a written manifest amounts to (the I/O layer re-decides on it)."""
    metadata = manifest["metadata"]
    return ObservedSecret(
        name=metadata["name"],
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        data={k: base64.b64decode(v).decode() for k, v in (manifest.get("data") or {}).items()},
        owner_uids=tuple(
            ref["uid"]
            for ref in metadata.get("ownerReferences") or []
            if str(ref.get("apiVersion", "")).startswith(names.GROUP + "/")
        ),
    )
