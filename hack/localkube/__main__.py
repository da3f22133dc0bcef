"""`make dev`: the whole system in the foreground until Ctrl-C.

Starts the control plane with a node (or uses your cluster with USE_EXISTING_CLUSTER=true), the
token service (SQLite in .dev/tokenservice), bootstraps a workspace whose admin credential goes
straight into a Secret, applies examples/01-basic, runs the workload of examples/04-workload on
the node (in a namespace of its own), and runs the operator as a local process with its log in
the foreground. Ctrl-C stops everything in reverse order and removes the state; logs stay in
.dev/logs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from lightkube import ApiError, Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace

from localkube.controlplane import REPO, free_port, start_control_plane, use_existing_cluster
from localkube.examples import (
    EXAMPLES,
    Manifest,
    apply_example,
    delete_example,
    ensure_namespace,
)
from localkube.operator_process import follow, start_operator
from localkube.processes import Process
from localkube.tokenservice import WorkspaceCredential, run_token_service

NAMESPACE = "apitoken-dev"
EXAMPLE = EXAMPLES / "01-basic"
# The workload example names the same ApiToken as 01-basic: it gets a namespace, and a
# workspace at the token service, of its own.
WORKLOAD_NAMESPACE = "apitoken-dev-workload"
WORKLOAD_EXAMPLE = EXAMPLES / "04-workload"
ADMIN = "admin"
# Short enough to watch the operator refresh the Secret's access token every minute or two.
ACCESS_TOKEN_TTL_S = 120
OPERATOR_SETTINGS = {
    "APITOKEN_OPERATOR_NAMESPACE": NAMESPACE,
    # The default 2-minute margin would pull refreshes of 2-minute tokens to half their life;
    # 30 s lets refreshPercent (75%) decide, as it would for real tokens.
    "APITOKEN_OPERATOR_REFRESH_MARGIN": "30s",
}

# Prints when the Secret's access token was issued and expires (JWT `iat`, `exp`), not the token.
_JWT_TIMES = (
    "import base64,json,sys,time; "
    'c=json.loads(base64.urlsafe_b64decode(sys.stdin.read().split(".")[1]+"==")); '
    'f=lambda t: time.strftime("%H:%M:%S",time.gmtime(t)); '
    'print("access token issued",f(c["iat"]),"expires",f(c["exp"]),"UTC")'
)


def _say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def _stop_on_signals() -> None:
    # SIGTERM (a process manager, `kill`) cleans up exactly like Ctrl-C does. SIGINT is set
    # explicitly because a shell starting us in the background leaves it ignored.
    def handler(signum: int, frame: FrameType | None) -> None:
        # A second Ctrl-C must not interrupt the cleanup the first one started.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def watch_commands(kubectl: Path, namespace: str, secret: str) -> list[str]:
    """Shell commands that show the access token changing without showing its value."""
    k = f"{kubectl} -n {namespace}"
    # The access token's times are annotations of the Secret, written with each refresh.
    columns = (
        r"NAME:.metadata.name,REFRESHED:.metadata.annotations.apitoken\.dev/refreshed-at,"
        r"NEXT-REFRESH:.metadata.annotations.apitoken\.dev/next-refresh-at"
    )
    once = (
        f"{k} get secret {secret} -o jsonpath='{{.data.access_token}}' | base64 -d"
        f" | python3 -c {shlex.quote(_JWT_TIMES)}"
    )
    return [
        f"{k} get apitok -w",
        f"{k} get secret {secret} -w -o custom-columns='{columns}'",
        f"while :; do {once}; sleep 10; done",
    ]


def _gone(client: Client, name: str) -> bool:
    try:
        client.get(Namespace, name)
    except ApiError as e:
        if e.status.code == 404:
            return True
        raise
    return False


def _remove_from_cluster(client: Client, applied: list[Manifest], timeout: float = 60.0) -> None:
    """On a cluster of your own: remove what make dev applied while the operator and the token
    service still run, so that the operator's finalizers clean up at the service."""
    for namespace in sorted({d["metadata"]["namespace"] for d in applied}):
        examples = [d for d in applied if d["metadata"]["namespace"] == namespace]
        folder = WORKLOAD_EXAMPLE if namespace == WORKLOAD_NAMESPACE else EXAMPLE
        _say(f"deleting {folder.relative_to(REPO)} and namespace {namespace}")
        # The example first: deleting the namespace alone would delete the workspace's
        # credential Secrets alongside the ApiTokens whose finalizers still need them.
        done = delete_example(client, examples, timeout)
        if done and not _gone(client, namespace):
            client.delete(Namespace, namespace)
            deadline = time.monotonic() + timeout
            while not _gone(client, namespace):
                if time.monotonic() > deadline:
                    done = False
                    break
                time.sleep(1)
        if not done:
            _say(f"namespace {namespace} not removed after {timeout:.0f}s; see the operator's log")


@dataclass(frozen=True)
class Running:
    """What the banner shows."""

    kubeconfig: Path
    service_url: str
    metrics_port: int
    pids: list[tuple[str, int]]
    api_tokens: list[str]
    pages_workspace: str  # the pages' sign-in: this workspace, the user ADMIN, and
    password_file: Path  # the password, kept only in this 0600 file
    secret: str  # the first ApiToken's Secret, the one to watch
    workload: str | None = None  # the Deployment of examples/04-workload, when it runs


def _workload_ready(client: Client, name: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiError):
            status = client.get(Deployment, name, namespace=WORKLOAD_NAMESPACE).status
            if status is not None and (status.availableReplicas or 0) >= 1:
                return True
        time.sleep(1)
    return False


def _start(
    stack: contextlib.ExitStack, dev_dir: Path, ttl: int, *, node: bool, workload: bool
) -> tuple[Running, Process]:
    """Start everything; `stack` stops it in reverse order: the operator first, the control
    plane last."""
    started = time.monotonic()
    cluster = stack.enter_context(
        start_control_plane(state_dir=dev_dir / "controlplane", log=_say, node=node)
    )
    kubeconfig = dev_dir / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o600)
    stack.callback(kubeconfig.unlink, missing_ok=True)
    _say(f"control plane ready in {time.monotonic() - started:.1f}s: {cluster.server}")

    logs = dev_dir / "logs"
    service = stack.enter_context(
        run_token_service(dev_dir / "tokenservice", logs, access_token_ttl=ttl, log=_say)
    )
    _say(f"token service ready: {service.url}")

    client = cluster.client()
    ensure_namespace(client, NAMESPACE)
    # `init` runs once per TokenWorkspace of the example (one here); its credential goes from
    # memory into the workspace's Secret.
    workspaces: list[str] = []

    def init(workspace: str) -> WorkspaceCredential:
        workspaces.append(workspace)
        return service.init(workspace, ADMIN)

    applied = apply_example(client, EXAMPLE, NAMESPACE, service.url, init)
    _say(f"applied {EXAMPLE.relative_to(REPO)} to namespace {NAMESPACE}")
    deployment = None
    if workload:
        ensure_namespace(client, WORKLOAD_NAMESPACE)
        # Its TokenWorkspace gets a workspace of its own at the service (same admin).
        applied += apply_example(
            client,
            WORKLOAD_EXAMPLE,
            WORKLOAD_NAMESPACE,
            service.url,
            lambda ws: service.init(f"{ws}-workload", ADMIN),
        )
        deployment = next(d["metadata"]["name"] for d in applied if d["kind"] == "Deployment")
        _say(f"applied {WORKLOAD_EXAMPLE.relative_to(REPO)} to namespace {WORKLOAD_NAMESPACE}")
    # A password for the pages, so that a person can sign in as the workspace's admin; it goes
    # to a 0600 file and never to the terminal.
    password_file = dev_dir / "pages-password"
    service.set_password(workspaces[0], ADMIN, password_file)
    stack.callback(password_file.unlink, missing_ok=True)

    metrics_port = free_port()
    operator_args = (
        "--all-namespaces",
        "--standalone",  # one replica: no peering objects to set up
        "--log-format=full",  # read by people: with times and what each line is about
        "--liveness-port=0",
        f"--metrics-port={metrics_port}",
    )
    operator = start_operator(kubeconfig, logs / "operator.log", OPERATOR_SETTINGS, operator_args)
    stack.callback(operator.stop)
    _say(f"started apitoken-operator (pid {operator.pid}), log {operator.log_path}")
    if not cluster.managed:
        stack.callback(_remove_from_cluster, client, applied)

    if deployment is not None and not _workload_ready(client, deployment):
        _say(f"Deployment {deployment} not available yet; see kubectl describe in its namespace")
    api_tokens = [
        d for d in applied if d["kind"] == "ApiToken" and d["metadata"]["namespace"] == NAMESPACE
    ]
    first = api_tokens[0]
    running = Running(
        kubeconfig=kubeconfig,
        service_url=service.url,
        metrics_port=metrics_port,
        pids=[
            *cluster.pids,
            ("apitoken-service", service.process.pid),
            ("apitoken-operator", operator.pid),
        ],
        api_tokens=[d["metadata"]["name"] for d in api_tokens],
        secret=first["spec"].get("secretName", first["metadata"]["name"]),
        pages_workspace=workspaces[0],
        password_file=password_file,
        workload=deployment,
    )
    return running, operator


def banner(running: Running, ttl: int, logs: Path) -> str:
    kubectl = Path(sys.executable).parent / "kubectl"
    tokens = " ".join(running.api_tokens)
    watch = "\n    ".join(watch_commands(kubectl, NAMESPACE, running.secret))
    pw = running.password_file
    return f"""
  kubeconfig     {running.kubeconfig}
  token service  {running.service_url}  (access tokens live {ttl} s)
  pages          {running.service_url}/signin
                 workspace {running.pages_workspace}, user {ADMIN}, password in {pw}
  metrics        http://127.0.0.1:{running.metrics_port}/metrics  (the operator's)
  namespace      {NAMESPACE}: TokenWorkspace, ApiToken {tokens}
  processes      {" ".join(f"{n}[{pid}]" for n, pid in running.pids)}
  logs           {logs}

  Look around:
    export KUBECONFIG={running.kubeconfig}
    {kubectl} -n {NAMESPACE} get tokenworkspaces,apitokens,secrets
    {kubectl} -n {NAMESPACE} describe apitoken {tokens}

  Watch the operator refresh the access token in Secret {running.secret} (values are never
  shown here; read them from the Secret):
    {watch}

{_workload_lines(kubectl, running.workload)}
  The operator's log follows. Ctrl-C stops everything and removes the state.
"""


def _workload_lines(kubectl: Path, deployment: str | None) -> str:
    if deployment is None:
        return ""
    return f"""
  A workload reads the token from its mounted Secret (examples/04-workload, namespace
  {WORKLOAD_NAMESPACE}); its log shows a fingerprint of the access token, never the value,
  and the fingerprint changes a few seconds after each refresh:
    {kubectl} -n {WORKLOAD_NAMESPACE} logs -f deploy/{deployment}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localkube", description=__doc__)
    parser.add_argument("--dev-dir", type=Path, default=REPO / ".dev")
    parser.add_argument(
        "--exit-after", type=float, default=None, help="stop after N seconds (for tests)"
    )
    parser.add_argument(
        "--access-token-ttl",
        type=int,
        default=ACCESS_TOKEN_TTL_S,
        metavar="SECONDS",
        help=f"lifetime of the token service's access tokens (default {ACCESS_TOKEN_TTL_S})",
    )
    parser.add_argument(
        "--node",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start a node with the control plane (default: when root and not "
        "USE_EXISTING_CLUSTER)",
    )
    parser.add_argument(
        "--workload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run examples/04-workload (default: when the node runs; on a cluster of your own "
        "its image localhost/apitoken-operator:0.1.0 must be there)",
    )
    args = parser.parse_args(argv)
    node = args.node
    if node is None:
        node = os.geteuid() == 0 and not use_existing_cluster()
    elif node and use_existing_cluster():
        parser.error("--node starts a node of our own: not with USE_EXISTING_CLUSTER")
    if not node and args.node is None and not use_existing_cluster():
        _say("not root: no node (containerd and kubelet need root), so no workload either")
    workload = node if args.workload is None else args.workload

    _stop_on_signals()
    dev_dir: Path = args.dev_dir
    dev_dir.mkdir(parents=True, exist_ok=True)
    code: int | None = None
    try:
        with contextlib.ExitStack() as stack:
            running, operator = _start(
                stack, dev_dir, args.access_token_ttl, node=node, workload=workload
            )
            print(banner(running, args.access_token_ttl, dev_dir / "logs"), flush=True)
            until = None if args.exit_after is None else time.monotonic() + args.exit_after
            code = follow(operator, until)
            if code is not None:
                _say(f"apitoken-operator exited with code {code}; stopping everything")
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError, subprocess.SubprocessError) as e:
        # A process that died or never got ready: its message holds the log tail; the traceback
        # of the harness would only bury it.
        _say(f"failed: {e}")
        code = 1
    _say("stopped and cleaned up")
    return 0 if code is None else 1


if __name__ == "__main__":
    sys.exit(main())
