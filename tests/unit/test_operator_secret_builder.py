"""The managed Secret: keys, label, annotations, owner reference, hash; no token in reprs."""

import base64
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from apitoken_operator.core.managed_secret import (
    ObservedSecret,
    Owner,
    SecretShape,
    build_secret,
    data_hash,
    data_intact,
    disabled_data,
    metadata_drifted,
    observe,
    token_data,
)
from apitoken_operator.crd import names
from apitoken_operator.providers.answers import TokenValues
from support.clock import T0

pytestmark = pytest.mark.unit

ACCESS = "eyJhbGciOiJFZERTQSJ9.access-value-do-not-leak.sig"
REFRESH = "apitok_rt_refresh-value-do-not-leak"
VALUES = TokenValues(
    access_token=ACCESS,
    refresh_token=REFRESH,
    token_type="Bearer",
    access_token_expires_at=T0 + timedelta(hours=1),
)


BASE_SHAPE = SecretShape(
    namespace="apps",
    name="billing",
    owner=Owner(name="billing", uid="uid-1"),
    set_owner_reference=True,
    token_id="tok-1",
    refresh_token_expires_at=T0 + timedelta(days=90),
    template_labels={"team": "billing"},
    template_annotations={"note": "hi"},
)


def shape(**changes: Any) -> SecretShape:
    return dataclasses.replace(BASE_SHAPE, **changes)


def test_manifest_has_the_keys_label_annotations_and_owner() -> None:
    manifest = build_secret(shape(), token_data(VALUES))
    meta = manifest["metadata"]
    data = {k: base64.b64decode(v).decode() for k, v in manifest["data"].items()}
    assert data == {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "token_type": "Bearer",
        "expires_at": "2026-11-28T13:00:00Z",
    }
    assert meta["labels"] == {
        "team": "billing",
        "app.kubernetes.io/managed-by": "apitoken-operator",
    }
    assert meta["annotations"]["apitoken.dev/token-id"] == "tok-1"
    assert meta["annotations"]["apitoken.dev/data-hash"] == data_hash("uid-1", data)
    assert meta["annotations"]["apitoken.dev/refresh-token-expires-at"] == "2027-02-26T12:00:00Z"
    assert meta["annotations"]["note"] == "hi"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "apitoken.dev/v1alpha1",
        "kind": "ApiToken",
        "name": "billing",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_operator_label_and_annotations_win_over_the_template() -> None:
    manifest = build_secret(
        shape(
            template_labels={names.LABEL_MANAGED_BY: "someone-else"},
            template_annotations={names.ANNOTATION_TOKEN_ID: "forged"},
        ),
        token_data(VALUES),
    )
    assert manifest["metadata"]["labels"][names.LABEL_MANAGED_BY] == "apitoken-operator"
    assert manifest["metadata"]["annotations"][names.ANNOTATION_TOKEN_ID] == "tok-1"


def test_orphan_secret_has_no_owner_reference() -> None:
    assert "ownerReferences" not in build_secret(shape(set_owner_reference=False), {})["metadata"]


def test_hash_does_not_contain_values_and_changes_with_any_edit() -> None:
    data = token_data(VALUES)
    digest = data_hash("uid-1", data)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert ACCESS not in digest and REFRESH not in digest
    assert data_hash("uid-1", {**data, "access_token": ACCESS + "x"}) != digest
    assert data_hash("uid-2", data) != digest  # salted by the ApiToken's UID
    # Moving bytes between a key and a value changes the hash too.
    assert data_hash("u", {"ab": "c"}) != data_hash("u", {"a": "bc"})


def test_observe_round_trips_and_detects_edits() -> None:
    observed = observe(build_secret(shape(), token_data(VALUES)))
    assert observed.managed and observed.token_id == "tok-1"
    assert observed.owner_uids == ("uid-1",)
    assert observed.access_token_expires_at == T0 + timedelta(hours=1)
    assert observed.refresh_token_expires_at == T0 + timedelta(days=90)
    assert data_intact("uid-1", observed)
    edited = ObservedSecret(
        name=observed.name,
        labels=observed.labels,
        annotations=observed.annotations,
        data={**observed.data, "refresh_token": "typed-by-hand"},
        owner_uids=observed.owner_uids,
    )
    assert not data_intact("uid-1", edited)


def test_disabled_data_keeps_no_usable_token() -> None:
    assert disabled_data(token_data(VALUES)) == {
        "token_type": "Bearer",
        "expires_at": "2026-11-28T13:00:00Z",
    }


@pytest.mark.parametrize(
    ("mutate", "drifted"),
    [
        (lambda s: s, False),
        (
            lambda s: ObservedSecret(
                s.name, {**s.labels, "extra": "kept"}, s.annotations, s.data, s.owner_uids
            ),
            False,
        ),
        (
            lambda s: ObservedSecret(
                s.name,
                {names.LABEL_MANAGED_BY: "apitoken-operator"},
                s.annotations,
                s.data,
                s.owner_uids,
            ),
            True,
        ),
        (
            lambda s: ObservedSecret(
                s.name, s.labels, {**s.annotations, "note": "changed"}, s.data, s.owner_uids
            ),
            True,
        ),
        (lambda s: ObservedSecret(s.name, s.labels, s.annotations, s.data, ()), True),
    ],
    ids=[
        "same",
        "foreign-label-added",
        "template-label-removed",
        "template-annotation-edited",
        "owner-removed",
    ],
)
def test_metadata_drift(mutate: object, drifted: bool) -> None:
    observed = observe(build_secret(shape(), token_data(VALUES)))
    assert callable(mutate)
    assert metadata_drifted(shape(), mutate(observed)) is drifted


def test_reprs_never_show_token_values() -> None:
    observed = observe(build_secret(shape(), token_data(VALUES)))
    for text in (repr(VALUES), repr(observed), str(VALUES), str(observed)):
        assert ACCESS not in text and REFRESH not in text
