"""Secret writes that keep failing, through the real lightkube client against an apiserver faked
with httpx.MockTransport: the failure is recorded in status naming the API status code and never
the error's text (which may echo token values); a workspace's credential that could not be
written is kept and written first, the workspace lock is not held through the write retries,
and ApiToken runs go on without the management API meanwhile instead of failing."""

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import httpx2
import jsonpatch
import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.models import Cluster as KubeCluster
from lightkube.config.models import User
from prometheus_client import generate_latest

from apitoken_operator.core.managed_secret import observe
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import WorkspaceKind
from apitoken_operator.execution.held_token import WriteRetry
from apitoken_operator.metrics import Metrics
from apitoken_operator.providers.http import utc_now
from apitoken_operator.reconcilers import apitoken as token_runs
from apitoken_operator.reconcilers.workspace import run_workspace, workspace_access, workspace_key
from apitoken_operator.runtime import LaunchConfig, Runtime
from apitoken_operator.settings import OperatorSettings
from support.clock import Clock
from support.held_tokens import FakeService, Harness

pytestmark = pytest.mark.unit

OPERATOR_NS = "apitoken-operator"
CREDENTIAL = "ctokws-main-credential"
GROUP_PATH = "/apis/apitoken.dev/v1alpha1"
# What a refusing admission policy may echo back: the test checks it never reaches status.
ECHOED = "denied request: data.refresh_token=rt-value-echoed"


class FakeApiServer:
    """Just the calls the operator makes for a ClusterTokenWorkspace (whose credential Secret
    carries no finalizer) and an ApiToken's status, in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self.refuse_secret_writes = False
        self.secret_writes = 0
        self.json_patches: list[str] = []
        self.version = 0
        self.gets: list[str] = []

    def put(self, path: str, body: dict[str, Any]) -> None:
        self.version += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[path] = body

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "GET":
            self.gets.append(path)
            if path in self.objects:
                return httpx2.Response(200, json=self.objects[path])
            return self._status(404, "NotFound", f"{path} not found")
        if request.method == "PATCH" and path.endswith("/status"):
            patch = json.loads(request.content)
            self.status_patches.append((path, patch))
            target = self.objects.get(path.removesuffix("/status"), {"metadata": {}})
            target.setdefault("status", {}).update(patch["status"])
            return httpx2.Response(200, json=target)
        if request.method == "PATCH" and "json-patch" in str(request.headers.get("content-type")):
            # The run's finalizer patches (`kube.finalizers`), applied as the apiserver would.
            if path not in self.objects:
                return self._status(404, "NotFound", f"{path} not found")
            self.json_patches.append(path)
            try:
                patched = jsonpatch.apply_patch(self.objects[path], json.loads(request.content))
            except jsonpatch.JsonPatchTestFailed:
                return self._status(422, "Invalid", "the patch's test failed")
            self.put(path, patched)
            return httpx2.Response(200, json=patched)
        if request.method == "PATCH" and "/secrets/" in path:
            self.secret_writes += 1
            if self.refuse_secret_writes:
                return self._status(403, "Forbidden", ECHOED)
            body = json.loads(request.content)
            self.put(path, body)
            return httpx2.Response(200, json=body)
        return self._status(405, "MethodNotAllowed", f"{request.method} {path}")

    @staticmethod
    def _status(code: int, reason: str, message: str) -> httpx2.Response:
        body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
        return httpx2.Response(code, json={**body, "message": message})


def kube_client(api: FakeApiServer) -> AsyncClient:
    """The operator's lightkube client, talking to the fake apiserver."""
    config = KubeConfig.from_one(cluster=KubeCluster(server="http://kube"), user=User())
    # lightkube's client is the httpx2 fork; the token service's is httpx.
    return AsyncClient(config, transport=httpx2.MockTransport(api.handle))


class ClockedRuntime(Runtime):
    """A Runtime whose clock the test moves."""

    def __init__(self, kube: AsyncClient, clock: Clock, service: FakeService) -> None:
        # Seeded tokens live 30 days: renewal (a third before expiry) is 20 days away.
        settings = OperatorSettings(namespace=OPERATOR_NS, credential_lifetime_days=30)
        super().__init__(LaunchConfig(settings=settings), kube, Metrics())
        self._clock = clock
        self._http[None] = httpx.AsyncClient(transport=httpx.MockTransport(service.handle))

    def clock(self) -> datetime:
        return self._clock()


@dataclasses.dataclass
class Cluster:
    api: FakeApiServer
    service: FakeService
    clock: Clock
    rt: ClockedRuntime

    @classmethod
    def new(cls) -> "Cluster":
        api = FakeApiServer()
        clock = Clock()
        clock.now = utc_now().replace(microsecond=0)
        service = FakeService(clock)
        kube = kube_client(api)
        bootstrap = base64.b64encode(service.seed().encode()).decode()
        api.put(
            f"/api/v1/namespaces/{OPERATOR_NS}/secrets/boot",
            {"metadata": {"name": "boot", "namespace": OPERATOR_NS}, "data": {"token": bootstrap}},
        )
        api.put(
            f"{GROUP_PATH}/clustertokenworkspaces/main",
            {
                "apiVersion": "apitoken.dev/v1alpha1",
                "kind": "ClusterTokenWorkspace",
                "metadata": {"name": "main", "uid": "ws-uid", "generation": 1},
                "spec": {
                    "url": "http://svc",
                    "workspace": "w1",
                    "credentialsSecretRef": {
                        "name": "boot",
                        "namespace": OPERATOR_NS,
                        "key": "token",
                    },
                },
            },
        )
        return cls(api, service, clock, ClockedRuntime(kube, clock, service))

    def credential(self) -> Mapping[str, str]:
        return observe(
            self.api.objects[f"/api/v1/namespaces/{OPERATOR_NS}/secrets/{CREDENTIAL}"]
        ).data

    def workspace_status(self) -> dict[str, Any]:
        return dict(self.api.objects[f"{GROUP_PATH}/clustertokenworkspaces/main"]["status"])

    async def run(self, **kwargs: Any) -> Any:
        return await run_workspace(
            self.rt, WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, None, "main", **kwargs
        )


REFRESHES = "POST /oauth2/token"


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


async def refused_refresh(c: Cluster) -> None:
    """Bootstrap, then a credential refresh whose write the apiserver refuses every time."""
    first = await c.run()
    assert first is not None and first.usable
    assert c.credential()["refresh_token"] == "rt-value-2"
    # A refresh due now (the token endpoint client dates tokens by the real clock, so the
    # test's clock stays put): a status that no longer says when the credential was refreshed.
    del c.api.objects[f"{GROUP_PATH}/clustertokenworkspaces/main"]["status"]["lastRefreshTime"]
    c.api.refuse_secret_writes = True
    c.rt.write_retry = WriteRetry(attempts=3, first_delay=timedelta(milliseconds=1))
    with pytest.raises(ApiError):
        await c.run()
    assert c.service.calls.count(REFRESHES) == 2  # the bootstrap and this one


async def test_a_credential_not_written_is_recorded_kept_and_written_without_a_refresh() -> None:
    c = Cluster.new()
    await refused_refresh(c)
    assert c.api.secret_writes == 1 + 3
    status = c.workspace_status()
    assert status["lastFailureReason"] == reasons.SECRET_WRITE_FAILED
    reconciling = condition(status, reasons.RECONCILING)
    assert reconciling["reason"] == reasons.SECRET_WRITE_FAILED
    assert "403 Forbidden" in reconciling["message"]
    assert condition(status, reasons.READY)["status"] == "True"  # the old access token is valid
    text = json.dumps(c.api.status_patches)
    assert "rt-value" not in text and "at-value" not in text and "denied" not in text
    assert c.credential()["refresh_token"] == "rt-value-2"

    # An ApiToken run meanwhile: one write attempt, then on without the management API.
    access = await workspace_access(c.rt, WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, "apps", "main")
    assert not access.usable and access.management is None
    assert access.token_endpoint is not None
    assert c.api.secret_writes == 1 + 3 + 1
    assert c.service.calls.count(REFRESHES) == 2

    c.api.refuse_secret_writes = False
    run = await c.run()
    assert run is not None and run.usable
    assert c.service.calls.count(REFRESHES) == 2  # written from memory, no second refresh
    assert c.credential()["refresh_token"] == "rt-value-3"
    status = c.workspace_status()
    assert status["lastFailureReason"] is None
    assert condition(status, reasons.READY)["reason"] == reasons.WORKSPACE_READY
    metrics = generate_latest(c.rt.metrics.registry).decode()
    assert 'reason="SecretWriteFailed"' in metrics


async def test_api_token_runs_are_not_held_by_the_write_retries() -> None:
    c = Cluster.new()
    await refused_refresh(c)
    key = workspace_key(WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, None, "main")
    lock = c.rt.workspace_locks.for_uid(key)
    # The workspace's own run retries its write for about 0.2 + 0.4 + 0.8 s ...
    c.rt.write_retry = WriteRetry(attempts=4, first_delay=timedelta(milliseconds=200))
    own = asyncio.create_task(c.run())
    await asyncio.sleep(0.05)
    # ... and an ApiToken's run meanwhile takes the lock between two of them, at once.
    started = time.monotonic()
    access = await workspace_access(c.rt, WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, "apps", "main")
    waited = time.monotonic() - started
    assert not access.usable
    assert waited < 0.5 and not own.done()
    with pytest.raises(ApiError):
        await own
    assert not lock.locked()
    assert c.service.calls.count(REFRESHES) == 2


async def test_api_token_runs_reuse_the_workspace_answer_until_the_credential_is_due() -> None:
    """A thousand ApiTokens of one workspace must not each read the workspace and its two
    Secrets under the workspace's lock: the last run's answer serves until its requeue time."""
    c = Cluster.new()
    first = await c.run()
    assert first is not None and first.usable and first.outcome is not None
    due = first.outcome.decision.requeue_at
    assert due is not None
    reads = len(c.api.gets)
    for _ in range(5):
        access = await workspace_access(c.rt, WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, "apps", "main")
        assert access.usable and access.management is not None and access.events == ()
    assert len(c.api.gets) == reads
    assert not c.rt.workspace_locks.for_uid(
        workspace_key(WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, None, "main")
    ).locked()
    # Once due, the next ApiToken run runs the workspace itself (reads, and refreshes).
    c.clock.now = due + timedelta(seconds=1)
    refreshes = c.service.calls.count(REFRESHES)
    access = await workspace_access(c.rt, WorkspaceKind.CLUSTER_TOKEN_WORKSPACE, "apps", "main")
    assert access.usable
    assert len(c.api.gets) > reads
    # (More than one: the fake service dates tokens by the real clock, this test's runs ahead.)
    assert c.service.calls.count(REFRESHES) > refreshes


async def test_record_write_failure_names_the_status_code_and_never_the_error_text() -> None:
    c = Cluster.new()
    h = Harness.new()
    await h.run()  # a token in the Secret, Ready
    # The refresh was due (and its values could not be written): the access token the Secret
    # holds is still valid for a few minutes.
    h.clock.now += timedelta(minutes=50)
    token = h.obs.token
    c.api.put(
        f"{GROUP_PATH}/namespaces/{token.namespace}/apitokens/{token.name}",
        {"metadata": {"name": token.name, "namespace": token.namespace}, "status": {}},
    )
    c.clock.now = h.clock.now
    refused = FakeApiServer._status(403, "Forbidden", ECHOED)
    error = ApiError(response=refused)
    await token_runs._record_write_failure(c.rt, h.obs, "billing", error)
    [(path, patch)] = c.api.status_patches
    assert path == f"{GROUP_PATH}/namespaces/apps/apitokens/billing/status"
    status = patch["status"]
    assert status["lastFailureReason"] == reasons.SECRET_WRITE_FAILED
    assert status["failedRefreshAttempts"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    message = conditions[reasons.RECONCILING]["message"]
    assert conditions[reasons.RECONCILING]["reason"] == reasons.SECRET_WRITE_FAILED
    assert "Secret billing" in message and "(403 Forbidden)" in message
    assert "denied" not in json.dumps(patch) and "rt-value" not in json.dumps(patch)
    # Ready stays True: the access token the Secret holds has not expired.
    assert reasons.READY not in conditions or conditions[reasons.READY]["status"] == "True"
    # Not an API error: its type is named, not its text.
    c.api.status_patches.clear()
    await token_runs._record_write_failure(c.rt, h.obs, "billing", ConnectionError(ECHOED))
    [(_, patch)] = c.api.status_patches
    assert "(ConnectionError)" in json.dumps(patch) and "denied" not in json.dumps(patch)
    metrics = generate_latest(c.rt.metrics.registry).decode()
    assert 'kind="ApiToken",reason="SecretWriteFailed"} 2.0' in metrics
