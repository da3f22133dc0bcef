"""Re-issue end to end: when renewBefore is reached, and when tokenName or workspaceRef change,
a new token is made first (in the right workspace), the Secret switches to it in one write, and
the old token is retired in its own workspace per deletionPolicy; Ready stays True throughout.

Every version of the Secret is watched: in each one the token-id annotation and the access
token's `tid` claim name the same token, so a switch in two writes would be caught."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Secret

from apitoken_operator.kube.resources import ApiToken
from localkube import Cluster
from support.operator import (
    SEEN_VALUES,
    OperatorTest,
    ServiceAdmin,
    api_token,
    condition,
    create_workspace,
    events_of,
    eventually,
    merge_patch,
    ready_token,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = pytest.mark.e2e

# lifetimeDays 1 and renewBefore 15 s short of it: renewal is due 15 s after issuance.
RENEW_AFTER = timedelta(seconds=15)
RENEW_BEFORE = "23h59m45s"


def _claims(access_token: str) -> dict[str, Any]:
    payload = access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


@dataclasses.dataclass(frozen=True)
class SecretVersion:
    resource_version: str
    token_id: str | None  # the apitoken.dev/token-id annotation
    access_token_tid: str | None  # the `tid` claim of the access token it holds


class History:
    """Every version of one Secret and one ApiToken's Ready condition, from watches (a poll
    could miss a version written and overwritten within milliseconds)."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.secrets: list[SecretVersion] = []
        self.ready: list[str | None] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._secrets, args=(cluster.client(), namespace, name)),
            threading.Thread(target=self._tokens, args=(cluster.client(), namespace, name)),
        ]
        for thread in self._threads:
            thread.daemon = True  # a watch blocks until its next event; never waited for

    def __enter__(self) -> History:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _secrets(self, kube: Client, namespace: str, name: str) -> None:
        with contextlib.suppress(Exception):
            for _, secret in kube.watch(
                Secret, namespace=namespace, fields={"metadata.name": name}
            ):
                if self._stop.is_set():
                    return
                meta = secret.metadata
                assert meta is not None
                data = secret.data or {}
                tid = None
                if "access_token" in data:
                    value = base64.b64decode(data["access_token"]).decode()
                    SEEN_VALUES.add(value)
                    tid = _claims(value).get("tid")
                self.secrets.append(
                    SecretVersion(
                        str(meta.resourceVersion),
                        (meta.annotations or {}).get("apitoken.dev/token-id"),
                        tid,
                    )
                )

    def _tokens(self, kube: Client, namespace: str, name: str) -> None:
        with contextlib.suppress(Exception):
            for _, obj in kube.watch(ApiToken, namespace=namespace, fields={"metadata.name": name}):
                if self._stop.is_set():
                    return
                self.ready.append(condition(obj, "Ready"))

    def token_ids(self) -> list[str | None]:
        """The token ids the Secret held, in order, repeats collapsed."""
        ids: list[str | None] = []
        for version in self.secrets:
            if not ids or ids[-1] != version.token_id:
                ids.append(version.token_id)
        return ids


def switched_to_new_token(kube: Client, namespace: str, old: str) -> dict[str, Any]:
    """Wait until the ApiToken is Ready with a token other than `old` in status and Secret."""

    def probe() -> dict[str, Any] | None:
        obj = kube.get(ApiToken, "tok", namespace=namespace)
        status = status_of(obj)
        current = status.get("tokenId")
        secret = kube.get(Secret, "tok", namespace=namespace)
        held = ((secret.metadata.annotations or {}) if secret.metadata else {}).get(
            "apitoken.dev/token-id"
        )
        ok = current and current != old and held == current
        return status if ok and condition(obj, "Ready") == "True" else None

    return eventually("the Secret to switch to a new token", probe, timeout=45)


def assert_switched_in_one_write(history: History, old: str, new: str) -> None:
    consistent = [v for v in history.secrets if v.token_id == v.access_token_tid]
    assert consistent == history.secrets, "a Secret version mixed two tokens"
    ids = history.token_ids()
    assert old in ids and new in ids, ids
    assert ids.index(new) == ids.index(old) + 1, ids  # straight from the old to the new
    # Ready never turned False once it was True.
    first_ready = history.ready.index("True")
    assert all(r == "True" for r in history.ready[first_ready:]), history.ready


def event_messages(kube: Client, namespace: str, reason: str) -> list[str]:
    return [e.message or "" for e in events_of(kube, namespace) if e.reason == reason]


def test_renew_before_reissues_the_token(kube: Client, op: OperatorTest, cluster: Cluster) -> None:
    ns = op.namespace
    with History(cluster, ns, "tok") as history:
        created = api_token(kube, ns, lifetimeDays=1, renewBefore=RENEW_BEFORE)
        first = status_of(ready_token(kube, ns))
        old = first["tokenId"]
        expires = datetime.fromisoformat(first["refreshTokenExpiresAt"])
        renewal = datetime.fromisoformat(first["renewalTime"])
        assert renewal == expires - (timedelta(days=1) - RENEW_AFTER)
        second = switched_to_new_token(kube, ns, old)
        new = second["tokenId"]
        # The replaced token is deleted (deletionPolicy Delete), and only after the switch.
        eventually("the old token to be deleted", lambda: op.admin.token(old) is None)
    assert_switched_in_one_write(history, old, new)
    # (Renewal comes every 15 s here, so a later token may already have followed.)
    assert old not in {t["id"] for t in op.admin.tokens_of(created.metadata.uid)}
    reissued = eventually(
        "a Reissued event", lambda: [m for m in event_messages(kube, ns, "Reissued") if new in m]
    )
    assert "RenewalDue" in reissued[0]
    deleted = eventually(
        "a Deleted event", lambda: [m for m in event_messages(kube, ns, "Deleted") if old in m]
    )
    assert "TokenReplaced" in deleted[0]
    # The new token's own renewal is a day ahead of its expiry, less renewBefore.
    new_expires = datetime.fromisoformat(second["refreshTokenExpiresAt"])
    assert new_expires > expires
    assert datetime.fromisoformat(second["renewalTime"]) == new_expires - (
        timedelta(days=1) - RENEW_AFTER
    )


def test_token_name_change_reissues_under_the_new_name(
    kube: Client, op: OperatorTest, cluster: Cluster
) -> None:
    ns = op.namespace
    with History(cluster, ns, "tok") as history:
        created = api_token(kube, ns, tokenName="before", deletionPolicy="Disable")
        old = status_of(ready_token(kube, ns))["tokenId"]
        merge_patch(kube, ns, {"spec": {"tokenName": "after"}})
        new = switched_to_new_token(kube, ns, old)["tokenId"]
        # deletionPolicy Disable: the replaced token is disabled, not deleted.
        eventually(
            "the old token to be disabled",
            lambda: (op.admin.token(old) or {}).get("status") == "disabled",
        )
    assert_switched_in_one_write(history, old, new)
    listed = {t["id"]: (t["name"], t["status"]) for t in op.admin.tokens_of(created.metadata.uid)}
    assert listed == {old: ("before", "disabled"), new: ("after", "active")}
    reissued = [m for m in event_messages(kube, ns, "Reissued") if new in m]
    assert reissued and "TokenNameChanged" in reissued[0]


@contextlib.contextmanager
def second_workspace(
    kube: Client, namespace: str, service: RunningTokenService
) -> Iterator[ServiceAdmin]:
    """Another workspace at the same token service, its admin, and a Ready TokenWorkspace
    "second" for it in the namespace."""
    name = f"second-{namespace}"[:60]
    init = service.cli("init", "--workspace", name, "--admin", "admin")
    assert init.returncode == 0, init.stderr[-2000:]
    credential = json.loads(init.stdout)
    SEEN_VALUES.update((credential["accessToken"], credential["refreshToken"]))
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=service.base_url, timeout=10, limits=limits) as http:
        admin = ServiceAdmin(
            dataclasses.replace(service, workspace=name),
            http,
            refresh_token=credential["refreshToken"],
        )
        SEEN_VALUES.add(bootstrap := admin.new_bootstrap_value(f"operator-{namespace}"))
        create_workspace(
            kube,
            namespace,
            url=service.base_url,
            service_workspace=name,
            bootstrap_value=bootstrap,
            name="second",
            bootstrap_secret="bootstrap-second",
        )
        yield admin


@pytest.mark.parametrize("policy", ["Delete", "Disable"])
def test_workspace_change_reissues_in_the_new_workspace(
    kube: Client, op: OperatorTest, cluster: Cluster, policy: str
) -> None:
    ns = op.namespace
    with (
        second_workspace(kube, ns, op.service) as second_admin,
        History(cluster, ns, "tok") as history,
    ):
        created = api_token(kube, ns, deletionPolicy=policy)
        uid = created.metadata.uid
        old = status_of(ready_token(kube, ns))["tokenId"]
        merge_patch(kube, ns, {"spec": {"workspaceRef": {"name": "second"}}})
        new = switched_to_new_token(kube, ns, old)["tokenId"]
        # The new token lives in the second workspace, tagged with the ApiToken's UID.
        assert [(t["id"], t["status"]) for t in second_admin.tokens_of(uid)] == [(new, "active")]
        # The old one is retired where it lives: the first workspace.
        if policy == "Delete":
            eventually("the old token to be deleted", lambda: op.admin.token(old) is None)
            assert op.admin.tokens_of(uid) == []
        else:
            eventually(
                "the old token to be disabled",
                lambda: (op.admin.token(old) or {}).get("status") == "disabled",
            )
            assert [t["id"] for t in op.admin.tokens_of(uid)] == [old]
        status = status_of(kube.get(ApiToken, "tok", namespace=ns))
        assert status["tokenWorkspace"] == "TokenWorkspace/second"
        eventually(
            "the retired token to leave status",
            lambda: "retiringTokens" not in status_of(kube.get(ApiToken, "tok", namespace=ns)),
        )
    assert_switched_in_one_write(history, old, new)
    # The Secret's access token works in the second workspace.
    data = kube.get(Secret, "tok", namespace=ns).data or {}
    access = base64.b64decode(data["access_token"]).decode()
    assert _claims(access)["ws"] == second_admin.service.workspace
    reissued = [m for m in event_messages(kube, ns, "Reissued") if new in m]
    assert reissued and "WorkspaceChanged" in reissued[0]
