"""Real faults for end-to-end tests: an HTTP proxy in front of the token service that can answer
503 or hang, and a ValidatingAdmissionPolicy that makes the apiserver refuse Secret writes.

    with FaultProxy(service.base_url) as proxy:        # a TokenWorkspace points at proxy.url
        proxy.target(refresh_token)                    # fault only refreshes presenting it
        proxy.mode = Mode.FAIL                         # 503; Mode.HANG: no answer for a while
                                                       # Mode.DROP: forwarded, answer withheld
        proxy.presented(refresh_token)                 # when each refresh presented it

    with secret_writes_denied(kube, namespace):        # UPDATEs of managed Secrets refused
        ...

The proxy keeps only SHA-256 digests of the refresh tokens it sees, never the values.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs

import httpx
import uvicorn
from lightkube import ApiError, Client
from lightkube.models.admissionregistration_v1 import (
    MatchResources,
    NamedRuleWithOperations,
    ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec,
    Validation,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.admissionregistration_v1 import (
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
)
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from support.tokenservice import free_loopback_port

__all__ = ["FaultProxy", "Mode", "Presented", "digest", "secret_writes_denied"]

# Hop-by-hop and length headers are the proxy's own business on each side.
_DROPPED = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}
TOKEN_PATH = "/oauth2/token"


class Mode(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # 503 Service Unavailable
    HANG = "hang"  # no answer until the mode changes (or `hang_limit` passed)
    # Forwarded (the service commits the rotation), the answer withheld for `hang_limit` (the
    # client times out); once: the mode goes back to PASS, so the client's retry passes.
    DROP = "drop"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Presented:
    """A token-endpoint request and the refresh token it presented (as a digest)."""

    at: float  # time.monotonic() when it arrived
    refresh_token_digest: str
    status: int  # what the client was answered (0: nothing yet, the request hangs)


class FaultProxy:
    """A reverse proxy on a loopback port, run by uvicorn in a thread of its own.

    Every token-endpoint request is recorded; faults apply only to those presenting a refresh
    token given to `target`, so the operator's own workspace credential and its other calls
    keep working."""

    def __init__(self, upstream: str, *, hang_limit: float = 30.0) -> None:
        self.upstream = upstream
        self.hang_limit = hang_limit
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = Mode.PASS
        # Any request (targeted or not) is held `slow_seconds` before it is forwarded, with
        # probability `slow_fraction`: a service that answers slowly now and then.
        self.slow_fraction = 0.0
        self.slow_seconds = 0.0
        self._slow_dice = random.Random(11)
        self._client: httpx.AsyncClient | None = None
        self._targets: set[str] = set()
        self._presented: list[Presented] = []
        # Digests of the refresh tokens in answers that DROP withheld from the client.
        self.dropped_refresh_tokens: list[str] = []
        self._lock = threading.Lock()
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "DELETE"])]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fault proxy did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode = Mode.PASS  # lets hanging requests go
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def target(self, refresh_token: str) -> None:
        """Fault (in FAIL or HANG mode) refreshes presenting this refresh token."""
        with self._lock:
            self._targets.add(digest(refresh_token))

    def presented(self, refresh_token: str | None = None) -> list[Presented]:
        """The token-endpoint requests so far (only those presenting `refresh_token`, if
        given), in order of arrival."""
        with self._lock:
            seen = list(self._presented)
        if refresh_token is None:
            return seen
        wanted = digest(refresh_token)
        return [p for p in seen if p.refresh_token_digest == wanted]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        presented = None
        if request.method == "POST" and request.url.path == TOKEN_PATH:
            form = parse_qs(body.decode(errors="replace"))
            presented = digest((form.get("refresh_token") or [""])[0])
        arrived = time.monotonic()
        with self._lock:
            targeted = presented in self._targets
            # Recorded on arrival (a hanging request too), completed with the answer.
            index = len(self._presented)
            if presented is not None:
                self._presented.append(Presented(arrived, presented, 0))
        mode = self.mode if targeted else Mode.PASS
        if mode is Mode.FAIL:
            response = Response(
                '{"error":"temporarily_unavailable"}',
                status_code=503,
                media_type="application/json",
            )
        elif mode is Mode.HANG:
            while self.mode is Mode.HANG and time.monotonic() - arrived < self.hang_limit:
                await asyncio.sleep(0.05)
            response = Response(status_code=504)
        elif mode is Mode.DROP:
            self.mode = Mode.PASS
            answer = await self._forward(request, body)
            with contextlib.suppress(ValueError):
                withheld = json.loads(bytes(answer.body)).get("refresh_token")
                if withheld:
                    self.dropped_refresh_tokens.append(digest(withheld))
            while time.monotonic() - arrived < self.hang_limit:
                await asyncio.sleep(0.05)
            response = Response(status_code=504)
        else:
            if self.slow_fraction and self._slow_dice.random() < self.slow_fraction:
                await asyncio.sleep(self.slow_seconds)
            response = await self._forward(request, body)
        if presented is not None:
            with self._lock:
                self._presented[index] = Presented(arrived, presented, response.status_code)
        return response

    async def _forward(self, request: Request, body: bytes) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        # One client for the proxy's lifetime (built on its loop): a client per request costs
        # an SSL context each, which starved the proxy under load (chaos test). No keep-alive:
        # the service closes idle connections.
        if self._client is None:
            limits = httpx.Limits(max_keepalive_connections=0)
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30, limits=limits)
        client = self._client
        answer = await client.request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=body,
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


# ---------------------------------------------------------------------------------------------
# The apiserver refusing Secret writes.

MANAGED_LABEL = "app.kubernetes.io/managed-by"


@contextlib.contextmanager
def secret_writes_denied(kube: Client, namespace: str, secret: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy and binding (CEL) that refuse every UPDATE of the managed
    Secret `secret` in `namespace` (other Secrets, such as the operator's workspace credential,
    stay writable), in force when the block starts (checked with a dry-run write) and the
    binding deleted when it ends (checked the same way)."""
    name = f"deny-secret-writes-{namespace}"[:63]
    kube.create(
        ValidatingAdmissionPolicy(
            metadata=ObjectMeta(name=name),
            spec=ValidatingAdmissionPolicySpec(
                failurePolicy="Fail",
                matchConstraints=MatchResources(
                    resourceRules=[
                        NamedRuleWithOperations(
                            apiGroups=[""],
                            apiVersions=["v1"],
                            operations=["UPDATE"],
                            resources=["secrets"],
                        )
                    ]
                ),
                validations=[
                    Validation(
                        expression=f"object.metadata.name != '{secret}'",
                        message=f"updates of Secret {secret} are refused by the test",
                    )
                ],
            ),
        )
    )
    try:
        kube.create(
            ValidatingAdmissionPolicyBinding(
                metadata=ObjectMeta(name=name),
                spec=ValidatingAdmissionPolicyBindingSpec(
                    policyName=name,
                    validationActions=["Deny"],
                    matchResources=MatchResources(
                        namespaceSelector=LabelSelector(
                            matchLabels={"kubernetes.io/metadata.name": namespace}
                        ),
                        objectSelector=LabelSelector(
                            matchLabels={MANAGED_LABEL: "apitoken-operator"}
                        ),
                    ),
                ),
            )
        )
        try:
            _wait_until(lambda: not _writable(kube, namespace, secret), "writes refused")
            yield
        finally:
            kube.delete(ValidatingAdmissionPolicyBinding, name)
            _wait_until(lambda: _writable(kube, namespace, secret), "writes allowed")
    finally:
        with contextlib.suppress(ApiError):
            kube.delete(ValidatingAdmissionPolicy, name)


def _writable(kube: Client, namespace: str, secret: str) -> bool:
    """Whether the apiserver admits an UPDATE of the Secret (a dry run: nothing is stored)."""
    patch = {"metadata": {"annotations": {"apitoken.dev/test-probe": str(time.time_ns())}}}
    try:
        kube.patch(
            Secret, secret, patch, namespace=namespace, patch_type=PatchType.MERGE, dry_run=True
        )
    except ApiError as error:
        if error.status.code in (403, 422):
            return False
        raise
    return True


def _wait_until(probe: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
