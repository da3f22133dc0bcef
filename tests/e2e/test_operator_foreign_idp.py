"""Refresh-only mode end to end against a token server nobody here wrote (Authlib's
AuthorizationServer, `support.foreign_idp`), through the real apiserver and `apitoken-operator
run`: a public client that rotates on every refresh (the seed's provider), confidential clients
(client_secret_basic, client_secret_post, a scope, extraParams), the dead chain (invalid_grant,
invalid_client), revocation on deletion and disable, and a rotation whose answer was lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from apitoken_operator.kube.resources import ApiToken, TokenWorkspace
from support.foreign_idp import CONFIDENTIAL, CONFIDENTIAL_POST, PUBLIC, ForeignIdP, digest
from support.operator import (
    RunningOperator,
    api_token,
    condition,
    dump,
    events_of,
    eventually,
    reason,
    release_leftovers,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def idp() -> Iterator[ForeignIdP]:
    with ForeignIdP(clients=(PUBLIC, CONFIDENTIAL, CONFIDENTIAL_POST), access_token_ttl=6) as idp:
        yield idp


@pytest.fixture
def ns(kube: Client, namespace: str, running_operator: RunningOperator) -> Iterator[str]:
    running_operator.wait_ready()
    yield namespace
    release_leftovers(kube, namespace)


def put_secret(kube: Client, namespace: str, name: str, data: dict[str, str]) -> None:
    """As `kubectl create secret generic NAME --from-file=KEY=/dev/stdin` would (applied, so
    a second call replaces the value)."""
    kube.apply(
        Secret(metadata=ObjectMeta(name=name, namespace=namespace), stringData=data),
        field_manager="person",
        force=True,
    )


def oauth2_workspace(kube: Client, namespace: str, name: str, **oauth2: Any) -> None:
    kube.create(
        TokenWorkspace(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={"provider": "oauth2", "oauth2": oauth2},
        )
    )


def get(kube: Client, namespace: str, name: str) -> Any:
    return kube.get(ApiToken, name, namespace=namespace)


def ready(kube: Client, namespace: str, name: str, timeout: float = 30) -> Any:
    def probe() -> Any:
        obj = get(kube, namespace, name)
        return obj if condition(obj, "Ready") == "True" else None

    return eventually(f"ApiToken {name} to be Ready", probe, timeout=timeout)


def refreshed(
    kube: Client, namespace: str, name: str, after: str, timeout: float = 30
) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        data = secret_data(kube, namespace, name) or {}
        return data if data.get("access_token") not in (None, after) else None

    return eventually(f"Secret {name} to get a new access token", probe, timeout=timeout)


def no_leaks(kube: Client, namespace: str, operator: RunningOperator, values: list[str]) -> None:
    haystacks = {
        "operator log": operator.logs(),
        "events": dump([e.to_dict() for e in events_of(kube, namespace)]),
        "ApiTokens": dump(list(kube.list(ApiToken, namespace=namespace))),
        "TokenWorkspaces": dump(list(kube.list(TokenWorkspace, namespace=namespace))),
    }
    assert values
    found = [
        f"a value starting {v[:8]!r} in {where}"
        for where, text in haystacks.items()
        for v in values
        if v and v in text
    ]
    assert not found, found


def public_token(kube: Client, ns: str, idp: ForeignIdP) -> dict[str, str]:
    """A TokenWorkspace "idp" for the public client and a Ready ApiToken "tok" importing a
    fresh refresh token; the managed Secret's data."""
    oauth2_workspace(kube, ns, "idp", tokenEndpoint=idp.token_endpoint, clientId=PUBLIC.client_id)
    put_secret(kube, ns, "handmade", {"refresh_token": idp.issue(PUBLIC.client_id)})
    api_token(kube, ns, name="tok", workspace="idp", refreshTokenSecretRef={"name": "handmade"})
    ready(kube, ns, "tok")
    held = secret_data(kube, ns, "tok")
    assert held is not None
    return held


def warnings(kube: Client, namespace: str, name: str, text: str) -> list[Any]:
    return [
        e
        for e in events_of(kube, namespace)
        if e.involvedObject.name == name and e.type == "Warning" and text in (e.message or "")
    ]


def test_public_client_like_the_seed_refreshes_and_rotates(
    kube: Client, ns: str, running_operator: RunningOperator
) -> None:
    # The seed's provider: a public client, rotation on every refresh, a 20 s access token.
    with ForeignIdP(clients=(PUBLIC,), access_token_ttl=20) as idp:
        # Only the issuer: the endpoints come from its RFC 8414 metadata.
        oauth2_workspace(kube, ns, "seed", issuer=idp.issuer, clientId=PUBLIC.client_id)
        handmade = idp.issue(PUBLIC.client_id)
        put_secret(kube, ns, "handmade", {"refresh_token": handmade})
        api_token(
            kube, ns, name="tok", workspace="seed", refreshTokenSecretRef={"name": "handmade"}
        )
        ready(kube, ns, "tok")
        first = secret_data(kube, ns, "tok")
        assert first is not None and first["refresh_token"] != handmade
        assert idp.revoked(handmade)  # rotated away: used once, never again
        assert idp.access_token_valid(first["access_token"])
        second = refreshed(kube, ns, "tok", first["access_token"], timeout=30)
        assert second["refresh_token"] != first["refresh_token"]
        assert idp.live_refresh_tokens(PUBLIC.client_id) == [second["refresh_token"]]
        seen = idp.token_requests()
        assert {s.auth_method for s in seen} == {"none"}
        assert {s.client_id for s in seen} == {PUBLIC.client_id}
        # Each refresh presented a different refresh token: none was ever replayed.
        presented = [s.refresh_token_digest for s in seen]
        assert len(presented) == len(set(presented)) >= 2
        assert all(s.status == 200 for s in seen)
        status = status_of(ready(kube, ns, "tok"))
        assert status["importedTokenDigest"].startswith("sha256:")
        no_leaks(kube, ns, running_operator, [*idp.values(), handmade])


@pytest.mark.parametrize("client", [CONFIDENTIAL, CONFIDENTIAL_POST], ids=lambda c: c.auth_method)
def test_confidential_client_with_scope_and_extra_params(
    kube: Client, ns: str, idp: ForeignIdP, running_operator: RunningOperator, client: Any
) -> None:
    assert client.client_secret is not None
    put_secret(kube, ns, "client", {"client_secret": client.client_secret})
    oauth2_workspace(
        kube,
        ns,
        "confidential",
        tokenEndpoint=idp.token_endpoint,
        clientId=client.client_id,
        clientAuthMethod=client.auth_method,
        clientSecretRef={"name": "client"},
        scope="reports:read",
        extraParams={"audience": "reports-api"},
    )
    put_secret(kube, ns, "handmade", {"refresh_token": idp.issue(client.client_id)})
    api_token(
        kube, ns, name="tok", workspace="confidential", refreshTokenSecretRef={"name": "handmade"}
    )
    ready(kube, ns, "tok")
    first = secret_data(kube, ns, "tok")
    assert first is not None
    refreshed(kube, ns, "tok", first["access_token"], timeout=20)
    seen = idp.token_requests()
    assert len(seen) >= 2
    for s in seen:
        assert (s.auth_method, s.client_id, s.status) == (client.auth_method, client.client_id, 200)
        assert s.scope == "reports:read"
        assert ("audience", "reports-api") in s.extra

    # A wrong client secret: the provider says invalid_client once, and the operator stops.
    put_secret(kube, ns, "client", {"client_secret": "not-the-secret-" + "y" * 20})

    def rejected() -> Any:
        obj = get(kube, ns, "tok")
        return obj if reason(obj) == "ClientRejected" else None

    obj = eventually("Ready=False reason ClientRejected", rejected, timeout=20)
    assert condition(obj, "Ready") == "False" and condition(obj, "Stalled") == "True"
    message = next(c["message"] for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "client settings" in message and "not retried until they change" in message
    count = len(idp.token_requests())
    eventually("the Failed event", lambda: warnings(kube, ns, "tok", "invalid_client"))
    time.sleep(8)  # longer than the backoff cap of the test settings: no retry loop
    assert len(idp.token_requests()) == count
    assert len([s for s in idp.token_requests() if s.status == 401]) == 1
    assert len(warnings(kube, ns, "tok", "invalid_client")) == 1
    # The managed Secret keeps its last access token.
    assert (secret_data(kube, ns, "tok") or {}).get("access_token")
    # The right secret again: refreshes resume without a new import.
    put_secret(kube, ns, "client", {"client_secret": client.client_secret})
    ready(kube, ns, "tok", timeout=20)
    no_leaks(kube, ns, running_operator, [*idp.values(), client.client_secret])


def test_invalid_grant_stops_at_once_until_a_new_refresh_token_is_imported(
    kube: Client, ns: str, idp: ForeignIdP, running_operator: RunningOperator
) -> None:
    held = public_token(kube, ns, idp)
    # A person disables the token in the provider's UI.
    idp.disable(held["refresh_token"])

    def rejected() -> Any:
        obj = get(kube, ns, "tok")
        return obj if reason(obj) == "RefreshTokenRejected" else None

    # The next refresh (within one access-token life) is refused; Ready=False at once.
    obj = eventually("Ready=False reason RefreshTokenRejected", rejected, timeout=15)
    assert condition(obj, "Ready") == "False" and condition(obj, "Stalled") == "True"
    message = next(c["message"] for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "import a new refresh token into Secret handmade" in message
    dead = digest(held["refresh_token"])
    refusals = [s for s in idp.token_requests() if s.refresh_token_digest == dead]
    assert [s.status for s in refusals] == [400]

    time.sleep(8)
    # No further request to the provider, one event, and the Secret keeps its access token.
    assert [s.status for s in idp.token_requests() if s.refresh_token_digest == dead] == [400]
    assert len(warnings(kube, ns, "tok", "invalid_grant")) == 1
    assert (secret_data(kube, ns, "tok") or {}).get("access_token") == held["access_token"]
    # A new value in the import Secret: imported once, Ready again.
    put_secret(kube, ns, "handmade", {"refresh_token": idp.issue(PUBLIC.client_id)})
    ready(kube, ns, "tok", timeout=20)
    no_leaks(kube, ns, running_operator, list(idp.values()))


def test_deletion_and_disable_revoke_the_refresh_token(
    kube: Client, ns: str, idp: ForeignIdP, running_operator: RunningOperator
) -> None:
    oauth2_workspace(
        kube,
        ns,
        "idp",
        tokenEndpoint=idp.token_endpoint,
        revocationEndpoint=idp.revocation_endpoint,
        clientId=PUBLIC.client_id,
    )
    for name in ("deleted", "disabled", "kept"):
        put_secret(kube, ns, f"{name}-import", {"refresh_token": idp.issue(PUBLIC.client_id)})
        policy: dict[str, Any] = {"deletionPolicy": "Orphan"} if name == "kept" else {}
        api_token(
            kube,
            ns,
            name=name,
            workspace="idp",
            refreshTokenSecretRef={"name": f"{name}-import"},
            **policy,
        )
    held = {}
    for name in ("deleted", "disabled", "kept"):
        ready(kube, ns, name)
        data = secret_data(kube, ns, name)
        assert data is not None
        held[name] = data["refresh_token"]

    kube.delete(ApiToken, "deleted", namespace=ns)
    eventually(
        "the deleted ApiToken's refresh token to be revoked", lambda: idp.revoked(held["deleted"])
    )
    kube.patch(
        ApiToken, "disabled", {"spec": {"disabled": True}}, namespace=ns, patch_type=PatchType.MERGE
    )

    def stripped() -> bool:
        data = secret_data(kube, ns, "disabled") or {}
        return "refresh_token" not in data and "access_token" not in data

    eventually("the disabled ApiToken's Secret to be stripped", stripped, timeout=20)
    assert idp.revoked(held["disabled"])
    obj = get(kube, ns, "disabled")
    assert reason(obj) == "Disabled"
    message = next(c["message"] for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "revoked at the provider" in message
    revocations = [s for s in idp.requests if s.path == "/oauth2/revoke"]
    assert {s.refresh_token_digest for s in revocations} == {
        digest(held["deleted"]),
        digest(held["disabled"]),
    }
    # Orphan leaves the token working.
    kube.delete(ApiToken, "kept", namespace=ns)
    eventually(
        "the orphaned ApiToken to go",
        lambda: (
            not [
                t
                for t in kube.list(ApiToken, namespace=ns)
                if t.metadata and t.metadata.name == "kept"
            ]
        ),
    )
    assert not idp.revoked((secret_data(kube, ns, "kept") or {})["refresh_token"])
    no_leaks(kube, ns, running_operator, list(idp.values()))


def test_without_a_revocation_endpoint_the_condition_says_to_use_the_ui(
    kube: Client, ns: str, idp: ForeignIdP
) -> None:
    held = public_token(kube, ns, idp)["refresh_token"]
    kube.patch(
        ApiToken, "tok", {"spec": {"disabled": True}}, namespace=ns, patch_type=PatchType.MERGE
    )

    def disabled() -> Any:
        obj = get(kube, ns, "tok")
        return obj if reason(obj) == "Disabled" else None

    obj = eventually("Ready=False reason Disabled", disabled, timeout=20)
    message = next(c["message"] for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "disable or delete it in the provider's UI" in message
    assert not idp.revoked(held)
    eventually("a NotRevoked event", lambda: warnings(kube, ns, "tok", "provider's UI"))


def test_a_lost_answer_after_rotation_is_reported_not_looped(
    kube: Client, ns: str, idp: ForeignIdP, running_operator: RunningOperator
) -> None:
    held = public_token(kube, ns, idp)
    # The provider rotates on the next refresh, but its answer comes after the operator gave
    # up waiting (3 s in the test settings).
    idp.lose_next_answer = True

    def rejected() -> Any:
        obj = get(kube, ns, "tok")
        return obj if reason(obj) == "RefreshTokenRejected" else None

    obj = eventually("Ready=False after the lost answer", rejected, timeout=30)
    message = next(c["message"] for c in status_of(obj)["conditions"] if c["type"] == "Ready")
    assert "answer to an earlier refresh was lost" in message
    assert "import a new refresh token" in message
    # The same refresh token was presented exactly twice: the lost rotation, then one retry.
    same = [
        s.status
        for s in idp.token_requests()
        if s.refresh_token_digest == digest(held["refresh_token"])
    ]
    assert same == [200, 400]

    time.sleep(6)
    assert [
        s.status
        for s in idp.token_requests()
        if s.refresh_token_digest == digest(held["refresh_token"])
    ] == [200, 400]
    no_leaks(kube, ns, running_operator, list(idp.values()))
