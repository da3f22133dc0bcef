"""`make dev` (python -m localkube): the whole system in the foreground, cleaned up on Ctrl-C."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Namespace, Secret

from localkube import Cluster
from localkube.controlplane import REPO, use_existing_cluster

pytestmark = pytest.mark.e2e

NAMESPACE = "apitoken-dev"
API_TOKEN = "reports-api"  # examples/01-basic
STARTED = {
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "apitoken-service",
    "apitoken-operator",
}
ApiToken = create_namespaced_resource("apitoken.dev", "v1alpha1", "ApiToken", "apitokens")
KUBECTL = Path(sys.executable).parent / "kubectl"


class Output:
    """Everything a child prints, read in the background so that it never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stdout = proc.stdout
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            with self._lock:
                self._lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if marker in text:
                return text
            if not self._thread.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} not printed in {timeout:.0f}s:\n{self.text()}")

    def close(self, timeout: float) -> str:
        self._thread.join(timeout)
        return self.text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _started_pids(banner: str) -> dict[str, int]:
    line = next(ln for ln in banner.splitlines() if ln.strip().startswith("processes"))
    return {name: int(pid) for name, pid in re.findall(r"([\w-]+)\[(\d+)\]", line)}


def _ready(client: Client) -> bool:
    try:
        obj = client.get(ApiToken, API_TOKEN, namespace=NAMESPACE)
    except ApiError:
        return False
    status = cast(dict[str, Any], obj.status or {})
    conditions: list[dict[str, Any]] = status.get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _poll(what: str, check: Callable[[], bool], timeout: float, output: Output) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            # Without the operator's per-request lines, which would push out what matters.
            lines = [ln for ln in output.text().splitlines() if "HTTP Request:" not in ln]
            tail = "\n".join(lines[-80:])
            raise AssertionError(f"{what} not within {timeout:.0f}s:\n{tail}")
        time.sleep(1)


def _token_values(client: Client) -> set[str]:
    """Every Secret value in the namespace: the ApiToken's, the bootstrap and the operator's."""
    values: set[str] = set()
    for secret in client.list(Secret, namespace=NAMESPACE):
        for encoded in (secret.data or {}).values():
            value = base64.b64decode(encoded).decode()
            if len(value) >= 20:  # token values; not "Bearer" or a timestamp
                values.add(value)
    return values


def _files_text(folder: Path) -> dict[Path, str]:
    return {
        f: f.read_bytes().decode(errors="replace")
        for f in folder.rglob("*")
        if f.is_file() and "etcd" not in f.parts  # etcd's data holds the Secrets, by design
    }


def _start_dev(dev_dir: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], Output]:
    """make dev, without a node unless `args` ask for one: the node is machine-wide (one at a
    time), and tests/node/test_make_dev_workload.py covers the workload."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "hack"), "PYTHONUNBUFFERED": "1", **env}
    argv = [sys.executable, "-m", "localkube", "--dev-dir", str(dev_dir)]
    if not args and env.get("USE_EXISTING_CLUSTER") != "true":
        args = ("--no-node",)
    proc = subprocess.Popen(
        # Access tokens of 20 s, so that the operator refreshes one while a test watches.
        [*argv, "--access-token-ttl=20", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    return proc, Output(proc)


def _sign_in_to_the_pages(banner: str) -> str:
    """The printed pages URL, workspace, user and password file let a person sign in; the
    password is in a 0600 file and nowhere in the output."""
    pages = re.search(
        r"pages +(\S+)/signin\n +workspace (\S+), user (\S+), password in (\S+)", banner
    )
    assert pages, banner
    url, workspace, user, password_file = pages.groups()
    assert os.stat(password_file).st_mode & 0o777 == 0o600
    password = Path(password_file).read_text().strip()
    assert len(password) >= 20 and password not in banner
    with httpx.Client(base_url=url, timeout=10) as browser:
        form = browser.get("/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf, form.text
        fields = {"csrf_token": csrf.group(1), "workspace": workspace, "user": user}
        wrong = browser.post("/signin", data={**fields, "password": password + "x"})
        assert wrong.status_code != 303 and "/tokens" not in wrong.headers.get("location", "")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', wrong.text)
        assert csrf, wrong.text
        signed_in = browser.post(
            "/signin", data={**fields, "csrf_token": csrf.group(1), "password": password}
        )
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/tokens"
        page = browser.get("/tokens")
        assert page.status_code == 200 and "OAuth 2.0 API Tokens" in page.text
    return password


def stop_and_check_removed(
    proc: subprocess.Popen[str], output: Output, kube: Client, applied: dict[str, str]
) -> str:
    """Ctrl-C make dev on a cluster of one's own: it deletes each example and its namespace
    (`applied`: example folder -> namespace) while the operator still runs. Its output."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    out = output.close(timeout=10)
    assert proc.returncode == 0, out
    assert "not removed" not in out, out
    for folder, namespace in applied.items():
        assert f"deleting {folder} and namespace {namespace}" in out
        with pytest.raises(ApiError) as gone:
            kube.get(Namespace, namespace)
        assert gone.value.status.code == 404
    return out


@pytest.mark.skipif(use_existing_cluster(), reason="starts its own control plane by design")
def test_dev_runs_the_system_shows_a_ready_token_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    dev_dir = tmp_path / "dev"
    proc, output = _start_dev(dev_dir)
    try:
        banner = output.wait_for("Ctrl-C stops everything", timeout=240)
        kubeconfig = dev_dir / "kubeconfig"
        assert f"kubeconfig     {kubeconfig}" in banner
        assert re.search(r"token service  http://127\.0\.0\.1:\d+", banner), banner
        pids = _started_pids(banner)
        assert set(pids) == STARTED, banner

        kube_env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        got = subprocess.run(
            [str(KUBECTL), "get", "namespaces", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=kube_env,
        )
        assert {"namespace/default", f"namespace/{NAMESPACE}"} <= set(got.stdout.split())

        client = Client(KubeConfig.from_file(kubeconfig))
        _poll(f"ApiToken {API_TOKEN} Ready", lambda: _ready(client), 180, output)
        secret = client.get(Secret, API_TOKEN, namespace=NAMESPACE)
        assert secret.metadata is not None and secret.metadata.labels is not None
        assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "apitoken-operator"
        assert {"access_token", "refresh_token"} <= set(secret.data or {})
        values = _token_values(client)  # before and after the refresh below
        password = _sign_in_to_the_pages(banner)

        # The printed watch command works, shows times rather than the token, and shows the
        # operator refreshing the access token.
        loop = re.search(r"while :; do (.+); sleep \d+; done", banner)
        assert loop, banner

        def shown() -> str:
            done = subprocess.run(
                ["bash", "-c", f"set -o pipefail; {loop.group(1)}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env=kube_env,
            )
            assert re.fullmatch(r"access token issued \S+ expires \S+ UTC\n", done.stdout)
            return done.stdout

        first = shown()
        _poll("an access token refresh", lambda: shown() != first, 60, output)

        values |= _token_values(client)
        access = base64.b64decode((secret.data or {})["access_token"]).decode()
        assert access in values and len(values) >= 5  # two pairs and the bootstrap value
        logs_before_stop = _files_text(dev_dir)

        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
        out = output.close(timeout=10)
        assert proc.returncode == 0, out
        assert "stopped and cleaned up" in out
        logs_after_stop = _files_text(dev_dir / "logs")  # kept, so they must stay clean too
        haystacks = [("make dev output", out), *logs_before_stop.items(), *logs_after_stop.items()]
        for where, text in haystacks:
            leaked = [v[:8] for v in values if v in text]
            assert not leaked, f"token values starting {leaked} in {where}"
        # The pages' password lives only in its file: not in the output or any kept log.
        for where, text in [("make dev output", out), *logs_after_stop.items()]:
            assert password not in text, f"the pages' password in {where}"
        assert not kubeconfig.exists()
        assert not (dev_dir / "controlplane").exists()
        assert not (dev_dir / "tokenservice").exists()
        assert not (dev_dir / "pages-password").exists()
        operator_log = (dev_dir / "logs" / "operator.log").read_text()  # kept after the stop
        assert operator_log.count("\n") > 5  # the operator did log
        assert "HTTP Request:" not in operator_log  # request lines only with --verbose
        assert not [name for name, pid in pids.items() if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dev_on_an_existing_cluster_removes_what_it_applied(
    cluster: Cluster, kube: Client, tmp_path: Path
) -> None:
    """USE_EXISTING_CLUSTER=true (here: the session's cluster): nothing of the cluster is
    started or stopped, and Ctrl-C deletes the example and its namespace while the operator
    still runs, so that its finalizers clean up at the token service and nothing is left."""
    proc, output = _start_dev(
        tmp_path / "dev", USE_EXISTING_CLUSTER="true", KUBECONFIG=str(cluster.kubeconfig)
    )
    try:
        banner = output.wait_for("Ctrl-C stops everything", timeout=120)
        pids = _started_pids(banner)
        assert set(pids) == {"apitoken-service", "apitoken-operator"}, banner
        _poll(f"ApiToken {API_TOKEN} Ready", lambda: _ready(kube), 120, output)

        stop_and_check_removed(proc, output, kube, {"examples/01-basic": NAMESPACE})
        assert not [name for name, pid in pids.items() if _alive(pid)]
        assert kube.get(Namespace, "default")  # the cluster itself is untouched
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(use_existing_cluster(), reason="starts its own control plane by design")
def test_dev_killed_outright_leaves_no_process_and_starts_again(tmp_path: Path) -> None:
    """SIGKILL gives the harness no chance to clean up: the kernel kills its children
    (PR_SET_PDEATHSIG), and the next `make dev` in the same folder starts cleanly."""
    dev_dir = tmp_path / "dev"
    proc, output = _start_dev(dev_dir)
    try:
        pids = _started_pids(output.wait_for("Ctrl-C stops everything", timeout=240))
        assert set(pids) == STARTED
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while [pid for pid in pids.values() if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {name: pid for name, pid in pids.items() if _alive(pid)}
        assert not left, f"still running after the harness was killed: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    again, output = _start_dev(dev_dir)
    try:
        output.wait_for("Ctrl-C stops everything", timeout=240)
        again.send_signal(signal.SIGINT)
        again.wait(timeout=90)
        assert again.returncode == 0, output.close(timeout=10)
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()
