"""The real operator for end-to-end tests: `apitoken-operator run` as a subprocess against the
local control plane and a real token service subprocess whose access tokens live seconds.

Per test module: one token service and one operator (cluster-wide), so their start-up is paid
once; per test: a fresh namespace with its own TokenWorkspace and bootstrap credential, so tests
do not see each other's tokens. Teardown releases what a test left (the abandon annotation), so
namespace deletion never waits on a finalizer after the operator is gone.

    from support.operator import *  # fixtures: e2e_service, running_operator, workspace, ...
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Secret
from lightkube.types import PatchType

from apitoken_operator.crd import names
from apitoken_operator.kube.resources import ApiToken, ClusterTokenWorkspace, TokenWorkspace
from localkube import Cluster
from support.polling import eventually
from support.tokenservice import RunningTokenService, free_loopback_port, start_token_service

__all__ = [
    "ACCESS_TOKEN_TTL",
    "ELECTION_SETTINGS",
    "OPERATOR_NAMESPACE",
    "SEEN_VALUES",
    "OperatorTest",
    "RunningOperator",
    "ServiceAdmin",
    "Workspace",
    "abandon",
    "access_token_ttl",
    "api_token",
    "apply_bootstrap_secret",
    "condition",
    "create_cluster_workspace",
    "create_workspace",
    "dump",
    "e2e_service",
    "events_of",
    "eventually",
    "get_api_token",
    "get_or_none",
    "gone",
    "leaks",
    "merge_patch",
    "next_refresh",
    "op",
    "operator_namespace",
    "operator_settings",
    "put_bootstrap_secret",
    "ready_token",
    "reason",
    "release_leftovers",
    "requests",
    "rotation_grace",
    "running_operator",
    "secret_data",
    "service_admin",
    "start_operator",
    "status_of",
    "workspace",
]

OPERATOR_BIN = Path(sys.executable).with_name("apitoken-operator")
OPERATOR_NAMESPACE = "apitoken-operator-e2e"
# Access tokens live 6 s: refreshes happen every few seconds during a test.
ACCESS_TOKEN_TTL = 6
# Settings that fit tokens living seconds: a margin of 1 s, quick retries and rechecks.
FAST_SETTINGS = {
    "APITOKEN_OPERATOR_REFRESH_MARGIN": "1s",
    "APITOKEN_OPERATOR_BACKOFF_BASE": "1s",
    "APITOKEN_OPERATOR_BACKOFF_CAP": "4s",
    "APITOKEN_OPERATOR_RECHECK_INTERVAL": "5s",
    "APITOKEN_OPERATOR_SECRET_WRITE_FIRST_DELAY": "50ms",
    "APITOKEN_OPERATOR_HTTP_TIMEOUT": "3s",
    "APITOKEN_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
}
# Leader election is on, with a Lease of a few seconds (it is taken at once: each operator
# of a test gets a Lease of its own unless the test shares one on purpose).
ELECTION_SETTINGS = {
    "APITOKEN_OPERATOR_LEADER_LEASE_DURATION": "8s",
    "APITOKEN_OPERATOR_LEADER_RENEW_DEADLINE": "6s",
    "APITOKEN_OPERATOR_LEADER_RETRY_PERIOD": "1s",
}
ABANDON = "apitoken.dev/abandon"
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# The operator process.


@dataclass
class RunningOperator:
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    liveness_port: int
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def restart(self, *, crash: bool) -> None:
        """Stop the process (SIGKILL when `crash`, as a node failure would) and start it again
        with the same command line, ports and log file."""
        if crash:
            self.process.kill()
            self.process.wait(timeout=10)
        else:
            _stop(self.process)
        self.process = _spawn(self.argv, self.env, self.log_path)
        self.wait_ready()

    def start_again(self, *, leading: bool = True) -> None:
        """Start the process that exited again, as the kubelet would (same command line)."""
        assert self.process.poll() is not None, "still running"
        self.process = _spawn(self.argv, self.env, self.log_path)
        self.wait_ready(leading=leading)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, *, leading: bool = True) -> None:
        """Until Kopf serves its liveness endpoint (holds the Lease, started, logged in,
        watching); with leading=False, until it answers at all (a standby does too)."""

        def alive_and_ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"apitoken-operator exited early:\n{self.logs()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{self.liveness_port}/healthz"
                response = httpx.get(url, timeout=1)
                standby = "standby" in response.text
                return response.status_code == 200 and (not leading or not standby)
            return False

        eventually("the operator's liveness endpoint", alive_and_ready, timeout=60)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


@contextlib.contextmanager
def start_operator(
    directory: Path,
    kubeconfig: Path,
    *,
    namespaces: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    lease: str | None = None,
    identity: str | None = None,
) -> Iterator[RunningOperator]:
    """`apitoken-operator run` with fast settings; stops exactly that process afterwards.
    With wait=False it returns at once (the caller starts other things meanwhile and calls
    `wait_ready`). Leader election is on: the Lease `lease` (default: one of its own) in
    OPERATOR_NAMESPACE, as `identity` (default: a new one; a restart keeps it)."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "operator.log"
    metrics_port, liveness_port = free_loopback_port(), free_loopback_port()
    where = [a for ns in namespaces for a in ("--namespace", ns)] or ["--all-namespaces"]
    argv = [
        str(OPERATOR_BIN),
        "run",
        *where,
        "--verbose",
        "--metrics-port",
        str(metrics_port),
        "--liveness-port",
        str(liveness_port),
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("APITOKEN_OPERATOR_")}
    full_env.update(FAST_SETTINGS)
    full_env.update(ELECTION_SETTINGS)
    tag = uuid.uuid4().hex[:10]
    full_env["APITOKEN_OPERATOR_LEADER_LEASE_NAME"] = lease or f"e2e-{tag}"
    full_env["POD_ID"] = identity or f"operator-{tag}"
    full_env.update(env or {})
    full_env["KUBECONFIG"] = str(kubeconfig)
    process = _spawn(argv, full_env, log_path)
    running = RunningOperator(process, log_path, metrics_port, liveness_port, argv, full_env)
    try:
        if wait:
            running.wait_ready()
        yield running
    finally:
        _stop(running.process)


# ---------------------------------------------------------------------------------------------
# The token service, seen by a workspace admin.


@dataclass
class ServiceAdmin:
    """The workspace admin of a running token service, over a synchronous client."""

    service: RunningTokenService
    http: httpx.Client
    # Token values stay out of reprs: pytest prints fixture values when a test fails.
    access_token: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    renewed_at: float = 0.0
    seen_values: set[str] = field(default_factory=set, repr=False)

    def _bearer(self) -> dict[str, str]:
        if time.monotonic() - self.renewed_at > ACCESS_TOKEN_TTL / 2:
            response = self.refresh(self.refresh_token)
            assert response.status_code == 200, response.text
            body = response.json()
            self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]
            self.renewed_at = time.monotonic()
        return {"Authorization": f"Bearer {self.access_token}"}

    def _tokens(self, rest: str = "") -> str:
        return f"/api/v1/workspaces/{self.service.workspace}/tokens{rest}"

    def refresh(self, refresh_token: str) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self.http.post("/oauth2/token", data=form)

    def new_bootstrap_value(self, name: str) -> str:
        """A refresh token of the admin, for a workspace's credentialsSecretRef."""
        response = self.http.post(
            self._tokens(), json={"name": name, "lifetimeDays": 30}, headers=self._bearer()
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.seen_values.update((body["accessToken"], body["refreshToken"]))
        return str(body["refreshToken"])

    def tokens_of(self, external_ref: str) -> list[dict[str, Any]]:
        response = self.http.get(
            self._tokens(),
            params={"externalRef": external_ref, "owner": "*"},
            headers=self._bearer(),
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def token(self, token_id: str) -> dict[str, Any] | None:
        response = self.http.get(self._tokens(f"/{token_id}"), headers=self._bearer())
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_tagged(self, external_ref: str, name: str = "stray") -> str:
        """A token tagged with an ApiToken's UID that no Secret holds, as a crash between
        creating a token and writing its Secret would leave behind. Its id."""
        response = self.http.post(
            self._tokens(),
            json={"name": name, "lifetimeDays": 1, "externalRef": external_ref},
            headers=self._bearer(),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        self.seen_values.update((body["accessToken"], body["refreshToken"]))
        SEEN_VALUES.update((body["accessToken"], body["refreshToken"]))
        return str(body["id"])

    def disable(self, token_id: str) -> None:
        """Disable a token behind the operator's back (as a person on the admin page would)."""
        response = self.http.post(self._tokens(f"/{token_id}/disable"), headers=self._bearer())
        assert response.status_code == 200, response.text

    def introspect(self, access_token: str) -> dict[str, Any]:
        """RFC 7662 with the token itself as the caller: does the service accept it?"""
        response = self.http.post(
            "/oauth2/introspect",
            data={"token": access_token},
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if response.status_code != 200:
            return {"active": False, "status": response.status_code}
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def access_token_ttl() -> int:
    """Seconds the token service's access tokens live; a module overrides it for a wider
    window between a failed refresh and expiry."""
    return ACCESS_TOKEN_TTL


@pytest.fixture(scope="module")
def rotation_grace() -> int:
    """Seconds the token service accepts a rotated refresh token again (a lost answer's retry);
    a module overrides it."""
    return 30


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    """Settings (environment) of the module's operator over FAST_SETTINGS; a module overrides
    it for what it tests (shorter timeouts, fewer write attempts, credential renewal)."""
    return {}


@pytest.fixture(scope="module")
def e2e_service(
    tmp_path_factory: pytest.TempPathFactory, access_token_ttl: int, rotation_grace: int
) -> Iterator[RunningTokenService]:
    with start_token_service(
        tmp_path_factory.mktemp("tokenservice"),
        access_token_ttl=access_token_ttl,
        rotation_grace=rotation_grace,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def service_admin(e2e_service: RunningTokenService) -> Iterator[ServiceAdmin]:
    # No keep-alive: the service closes idle connections, and a reused one fails a request.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=e2e_service.base_url, timeout=10, limits=limits) as http:
        admin = ServiceAdmin(
            e2e_service, http, refresh_token=e2e_service.credential["refreshToken"]
        )
        yield admin


@pytest.fixture(scope="session")
def operator_namespace(kube: Client) -> str:
    with contextlib.suppress(ApiError):
        kube.create(Namespace(metadata=ObjectMeta(name=OPERATOR_NAMESPACE)))
    return OPERATOR_NAMESPACE


@pytest.fixture(scope="module")
def running_operator(
    cluster: Cluster,
    operator_namespace: str,
    operator_settings: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    # Not waited for here: the token service starts meanwhile; `workspace` waits.
    directory = tmp_path_factory.mktemp("operator")
    with start_operator(
        directory, cluster.kubeconfig, env=operator_settings, wait=False
    ) as running:
        yield running


# ---------------------------------------------------------------------------------------------
# Per test: a workspace in the test's namespace.


@dataclass
class Workspace:
    namespace: str
    name: str
    bootstrap_secret: str


def put_bootstrap_secret(kube: Client, namespace: str, name: str, value: str) -> None:
    """A Secret holding a bootstrap refresh token under the key refresh_token."""
    kube.create(
        Secret(
            metadata=ObjectMeta(name=name, namespace=namespace),
            stringData={"refresh_token": value},
        )
    )


def apply_bootstrap_secret(
    kube: Client, namespace: str, value: str, name: str = "bootstrap"
) -> None:
    """Put a new bootstrap value in the Secret as a GitOps tool would (server-side apply by
    its own field manager, taking the field over)."""
    kube.apply(
        Secret(
            metadata=ObjectMeta(name=name, namespace=namespace), stringData={"refresh_token": value}
        ),
        field_manager="gitops",
        force=True,
    )


def create_workspace(
    kube: Client,
    namespace: str,
    *,
    url: str,
    service_workspace: str,
    bootstrap_value: str,
    name: str = "main",
    bootstrap_secret: str = "bootstrap",
    wait_ready: bool = True,
) -> Workspace:
    """A bootstrap Secret holding `bootstrap_value` and a TokenWorkspace using it; with
    `wait_ready`, returns once the operator reports the workspace Ready."""
    put_bootstrap_secret(kube, namespace, bootstrap_secret, bootstrap_value)
    kube.create(
        TokenWorkspace(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec={
                "url": url,
                "workspace": service_workspace,
                "credentialsSecretRef": {"name": bootstrap_secret},
            },
        )
    )
    if wait_ready:
        eventually(
            f"the TokenWorkspace {name} to be Ready",
            lambda: (
                condition(kube.get(TokenWorkspace, name, namespace=namespace), "Ready") == "True"
            ),
            timeout=30,
        )
    return Workspace(namespace, name, bootstrap_secret)


def create_cluster_workspace(kube: Client, name: str, admin: ServiceAdmin, **spec: Any) -> None:
    """A ClusterTokenWorkspace `name` on the admin's service workspace, its bootstrap Secret (a
    fresh value of the admin) of the same name in the operator's namespace; `spec` adds fields
    (allowedNamespaces). Delete both when done."""
    put_bootstrap_secret(kube, OPERATOR_NAMESPACE, name, admin.new_bootstrap_value(name))
    kube.create(
        ClusterTokenWorkspace(
            metadata=ObjectMeta(name=name),
            spec={
                "url": admin.service.base_url,
                "workspace": admin.service.workspace,
                "credentialsSecretRef": {"name": name, "namespace": OPERATOR_NAMESPACE},
                **spec,
            },
        )
    )


def merge_patch(
    kube: Client, namespace: str, patch: dict[str, Any], name: str = "tok", kind: Any = ApiToken
) -> None:
    """A JSON merge patch of an object in the namespace (an ApiToken unless `kind` says)."""
    kube.patch(kind, name, patch, namespace=namespace, patch_type=PatchType.MERGE)


def abandon(kube: Client, namespace: str, name: str = "tok", kind: Any = ApiToken) -> None:
    """Set apitoken.dev/abandon: the operator releases the object without cleaning up."""
    merge_patch(kube, namespace, {"metadata": {"annotations": {ABANDON: "true"}}}, name, kind)


def release_leftovers(kube: Client, namespace: str) -> None:
    """Let the operator release every ApiToken of the namespace before it goes."""
    leftovers = list(kube.list(ApiToken, namespace=namespace))
    for obj in leftovers:
        assert obj.metadata is not None
        name = str(obj.metadata.name)
        abandon(kube, namespace, name)
        with contextlib.suppress(ApiError):
            kube.delete(ApiToken, name, namespace=namespace)

    def all_gone() -> bool:
        return not list(kube.list(ApiToken, namespace=namespace))

    if leftovers:
        eventually("the test's ApiTokens to be released", all_gone, timeout=30)


@pytest.fixture
def workspace(
    kube: Client,
    namespace: str,
    running_operator: RunningOperator,
    service_admin: ServiceAdmin,
) -> Iterator[Workspace]:
    """A bootstrap Secret and a Ready TokenWorkspace "main" in the test's namespace.
    (The operator is requested before the service so both start at the same time.)"""
    running_operator.wait_ready()
    yield create_workspace(
        kube,
        namespace,
        url=service_admin.service.base_url,
        service_workspace=service_admin.service.workspace,
        bootstrap_value=service_admin.new_bootstrap_value(f"operator-{namespace}"),
    )
    found = leaks(kube, namespace, running_operator, service_admin.service)
    release_leftovers(kube, namespace)
    assert not found, found


@dataclass(frozen=True)
class OperatorTest:
    """What an end-to-end test of the operator works with, besides the cluster client: its own
    namespace with a Ready TokenWorkspace "main" (`workspace`), the token service's workspace
    admin and the module's running operator."""

    workspace: Workspace
    admin: ServiceAdmin
    operator: RunningOperator

    @property
    def namespace(self) -> str:
        return self.workspace.namespace

    @property
    def service(self) -> RunningTokenService:
        return self.admin.service


@pytest.fixture
def op(
    workspace: Workspace, service_admin: ServiceAdmin, running_operator: RunningOperator
) -> OperatorTest:
    """The test's namespace, workspace, service admin and operator in one (see OperatorTest);
    the leak scan and the release of what the test left run when it ends (`workspace`)."""
    return OperatorTest(workspace, service_admin, running_operator)


# ---------------------------------------------------------------------------------------------
# Reading what the operator did.


def api_token(
    kube: Client,
    namespace: str,
    name: str = "tok",
    workspace: str = "main",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> Any:
    body = {"workspaceRef": {"name": workspace}, **spec}
    meta = ObjectMeta(name=name, namespace=namespace, labels=labels)
    return kube.create(ApiToken(metadata=meta, spec=body))


def requests(operator: RunningOperator, method: str, path: str) -> int:
    """How many Kubernetes API requests the operator logged for exactly this path."""
    # The log is JSON: the quote before HTTP/1.1 is escaped.
    pattern = re.compile(rf'HTTP Request: {method} \S*{re.escape(path)}(\?\S*)? \\"HTTP/1\.1')
    return sum(1 for line in operator.logs().splitlines() if pattern.search(line))


def runs(operator: RunningOperator) -> float:
    """The operator's ApiToken runs so far (its own metric: a run with nothing due reads and
    writes nothing, so the apiserver cannot count it)."""
    found = re.findall(
        r'^apitoken_reconciles_total\{kind="ApiToken"\} (\S+)$', operator.metrics(), re.MULTILINE
    )
    return sum(float(v) for v in found)


def get_api_token(kube: Client, namespace: str, name: str = "tok") -> Any:
    return kube.get(ApiToken, name, namespace=namespace)


def ready_token(kube: Client, namespace: str, name: str = "tok", timeout: float = 30) -> Any:
    """Wait until the ApiToken's Ready condition is True; return the resource."""

    def probe() -> Any:
        obj = get_api_token(kube, namespace, name)
        return obj if condition(obj, "Ready") == "True" else None

    return eventually(f"ApiToken {name} to be Ready", probe, timeout=timeout)


def status_of(obj: Any) -> dict[str, Any]:
    status: dict[str, Any] = dict(obj.get("status") or {})
    return status


def condition(obj: Any, type_: str) -> str | None:
    for c in status_of(obj).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def reason(obj: Any, type_: str = "Ready") -> str | None:
    for c in status_of(obj).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("reason"))
    return None


# Every token value a test has seen, for the leak scans (invariant 1).
SEEN_VALUES: set[str] = set()
_VALUE_KEYS = ("access_token", "refresh_token")


def _decoded(secret: Secret) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    SEEN_VALUES.update(v for k, v in data.items() if k in _VALUE_KEYS and len(v) >= 16)
    return data


def get_or_none(kube: Client, kind: Any, name: str, namespace: str | None = None) -> Any:
    """The object, or None when the apiserver answers 404."""
    try:
        return kube.get(kind, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise


def gone(kube: Client, kind: Any, name: str, namespace: str | None = None) -> bool:
    """Whether the object is gone (a probe for `eventually`)."""
    return get_or_none(kube, kind, name, namespace) is None


def secret_data(kube: Client, namespace: str, name: str) -> dict[str, str] | None:
    secret = get_or_none(kube, Secret, name, namespace)
    return None if secret is None else _decoded(secret)


def access_token_schedule(kube: Client, namespace: str, name: str = "tok") -> dict[str, str]:
    """The managed Secret's record of its access token: `expiresAt` (the data key), and the
    annotations `refreshedAt` (when the operator obtained it) and `nextRefreshAt`."""
    secret = kube.get(Secret, name, namespace=namespace)
    annotations = (secret.metadata.annotations if secret.metadata else None) or {}
    data = _decoded(secret)
    return {
        "expiresAt": data.get("expires_at", ""),
        "refreshedAt": annotations.get(names.ANNOTATION_REFRESHED_AT, ""),
        "nextRefreshAt": annotations.get(names.ANNOTATION_NEXT_REFRESH_AT, ""),
    }


def next_refresh(
    kube: Client, namespace: str, after: Mapping[str, str], name: str = "tok", timeout: float = 15
) -> dict[str, str]:
    """Wait until the managed Secret holds an access token other than `after`'s; return it."""

    def probe() -> dict[str, str] | None:
        data = secret_data(kube, namespace, name)
        return (
            data if data and data.get("access_token") not in (None, after["access_token"]) else None
        )

    return eventually(f"the access token in Secret {name} to be refreshed", probe, timeout=timeout)


def leaks(
    kube: Client, namespace: str, operator: RunningOperator, service: RunningTokenService
) -> list[str]:
    """Where any token value seen so far (and every value in the namespace's Secrets now)
    shows up: operator log, events, ApiTokens and workspaces (status, annotations, Kopf's
    last-handled configuration), the service's database. Empty when nothing leaked."""
    for secret in kube.list(Secret, namespace=namespace):
        _decoded(secret)
    for secret in kube.list(Secret, namespace=OPERATOR_NAMESPACE):
        _decoded(secret)
    database = b"".join(
        p.read_bytes() for p in service.database_path.parent.glob(service.database_path.name + "*")
    )
    haystacks = {
        "operator log": operator.logs(),
        "events": dump([e.to_dict() for e in events_of(kube, namespace)]),
        "ApiTokens": dump(list(kube.list(ApiToken, namespace=namespace))),
        "TokenWorkspaces": dump(list(kube.list(TokenWorkspace, namespace=namespace))),
        "service database": database.decode("latin-1"),
    }
    values = set(SEEN_VALUES)
    assert values, "no token value was seen: the scan would prove nothing"
    return [
        f"a value starting {value[:6]!r} in {where}"
        for where, text in haystacks.items()
        for value in values
        if value in text
    ]


def events_of(kube: Client, namespace: str) -> list[Event]:
    return list(kube.list(Event, namespace=namespace))


def dump(obj: Any) -> str:
    """JSON of API objects (lightkube models or lists of them), for scans."""
    return json.dumps(obj, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o))


def token_id(kube: Client, namespace: str, name: str = "tok") -> str:
    return str(status_of(kube.get(ApiToken, name, namespace=namespace)).get("tokenId") or "")


def new_token_id(kube: Client, namespace: str, old: str, name: str = "tok") -> str:
    """Wait until the ApiToken is Ready with a token other than `old` in its Secret."""

    def probe() -> str | None:
        obj = kube.get(ApiToken, name, namespace=namespace)
        current = str(status_of(obj).get("tokenId") or "")
        secret = kube.get(Secret, name, namespace=namespace)
        in_secret = ((secret.metadata.annotations or {}) if secret.metadata else {}).get(
            "apitoken.dev/token-id"
        )
        ok = current and current != old and in_secret == current
        return current if ok and condition(obj, "Ready") == "True" else None

    return eventually("a new token", probe, timeout=30)
