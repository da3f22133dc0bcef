"""Start etcd, kube-apiserver and kube-controller-manager on loopback; stop exactly them."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from localkube import pki as pki_mod
from localkube.binaries import Binaries, locate
from localkube.kubeconfig import write_kubeconfig
from localkube.node import NodeInfo, start_node
from localkube.processes import Process

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CRDS = REPO / "crds"
FIELD_MANAGER = "localkube"
# Controllers the operator relies on: garbage collection of owned Secrets, namespace deletion,
# and the default ServiceAccount in each namespace. Nothing that needs nodes.
CONTROLLERS = "garbage-collector-controller,namespace-controller,serviceaccount-controller"
# With a node: Deployments, the CA bundle every ServiceAccount token volume mounts, Service
# endpoints (our DNS reads them), the node's lifecycle (it lifts the not-ready taint), PVC binding.
NODE_CONTROLLERS = (
    "deployment-controller,replicaset-controller,root-ca-certificate-publisher-controller,"
    "endpointslice-controller,node-lifecycle-controller,persistentvolume-binder-controller"
)
PIDS_FILE = "pids.json"


@dataclass(frozen=True)
class Cluster:
    """What a test or `make dev` needs to talk to the cluster."""

    kubeconfig: Path
    server: str
    managed: bool  # True when this harness started the processes
    state_dir: Path | None = None
    pids: tuple[tuple[str, int], ...] = ()  # (name, pid) of each process the harness started
    node: NodeInfo | None = None  # the local node, when the harness started one

    def client(self) -> Client:
        return Client(KubeConfig.from_file(self.kubeconfig), field_manager=FIELD_MANAGER)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, alive: Sequence[Process] = ()
) -> None:
    """Poll `check` until it is true; fail early with the log of a process that died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in alive:
            p.check_alive()
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in alive)
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{tails}")
        time.sleep(0.25)


def apply_crds(client: Client, paths: Sequence[Path], timeout: float = 60.0) -> list[str]:
    """Server-side apply every CRD in `paths` (files or folders); wait until each is
    Established and its resources can be listed."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    docs: list[dict[str, Any]] = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc:
                continue
            if doc.get("kind") != "CustomResourceDefinition":
                raise ValueError(f"{f}: only CustomResourceDefinitions belong in a CRD file")
            # from_dict is typed as returning its mix-in; the class is the one we asked for.
            crd = cast(CustomResourceDefinition, CustomResourceDefinition.from_dict(doc))
            client.apply(crd, force=True)
            docs.append(doc)
    names = [str(doc["metadata"]["name"]) for doc in docs]

    def established(name: str) -> bool:
        crd = client.get(CustomResourceDefinition, name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    def servable(doc: dict[str, Any]) -> bool:
        # An Established CRD still answers lists with 429 "storage is (re)initializing" until
        # its watch cache is filled; an operator starting then logs errors and retries.
        spec = doc["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("storage"))
        resource = (spec["group"], version, spec["names"]["kind"], spec["names"]["plural"])
        try:
            if spec["scope"] == "Namespaced":
                namespaced = create_namespaced_resource(*resource)
                next(iter(client.list(namespaced, namespace="*", chunk_size=1)), None)
            else:
                next(iter(client.list(create_global_resource(*resource), chunk_size=1)), None)
        except ApiError as e:
            if e.status.code == 429:
                return False
            raise
        return True

    for doc in docs:
        name = str(doc["metadata"]["name"])
        wait_until(f"CRD {name}", functools.partial(established, name), timeout)
        wait_until(f"CRD {name} served", functools.partial(servable, doc), timeout)
    return names


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) with RBAC, in a state folder of its own.

    Use as a context manager; leaving it (normally, by Ctrl-C or by a failed test) stops the
    processes it started, in reverse order, and removes the state folder.
    """

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        binaries: Binaries | None = None,
        crds: Sequence[Path] = (DEFAULT_CRDS,),
        log: Callable[[str], None] = lambda _msg: None,
        node: bool = False,
    ) -> None:
        self._node = node
        self._state_dir = state_dir
        self._binaries = binaries
        self._crds = crds
        self._log = log
        self._stack = contextlib.ExitStack()
        self.processes: list[Process] = []
        self._etcd_healthy: Callable[[], bool] = lambda: False
        self._apiserver_ready: Callable[[], bool] = lambda: False

    def __enter__(self) -> Cluster:
        try:
            return self._start()
        except BaseException:
            self._stack.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _spawn(self, name: str, argv: list[str], logs: Path) -> Process:
        proc = Process(name, argv, logs / f"{name}.log")
        self.processes.append(proc)
        self._stack.callback(proc.stop)
        self._log(f"started {name} (pid {proc.pid}), log {proc.log_path}")
        # Read by the next start if this harness dies before stopping them.
        (logs.parent / PIDS_FILE).write_text(
            json.dumps([[p.name, p.pid, p.argv0] for p in self.processes])
        )
        return proc

    def restart_etcd_and_apiserver(self, down_for: float = 0.0) -> None:
        """Stop kube-apiserver and etcd (in that order: an apiserver told to stop after etcd is
        gone waits for ever), keep them down `down_for` seconds, and start them again with the
        same command lines: same data directory, ports and certificates. Returns once the
        apiserver is ready again. For chaos tests of what runs against the cluster."""
        by_name = {p.name: p for p in self.processes}
        etcd, apiserver = by_name["etcd"], by_name["kube-apiserver"]
        apiserver.stop()
        etcd.stop()
        time.sleep(down_for)
        etcd.start_again()
        wait_until("etcd", self._etcd_healthy, 30, [etcd])
        apiserver.start_again()
        wait_until("kube-apiserver", self._apiserver_ready, 120, [etcd, apiserver])

    def _start(self) -> Cluster:
        binaries = self._binaries or locate()
        if self._state_dir is None:
            state = Path(tempfile.mkdtemp(prefix="localkube-"))
        else:
            state = self._state_dir
            if state.exists():  # left by a harness that was killed: its processes, its files
                reap_stale(state, self._log)
            state.mkdir(parents=True)
        self._stack.callback(shutil.rmtree, state, True)
        logs = state / "logs"
        logs.mkdir()
        pki = pki_mod.generate(state / "pki")

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                f"--data-dir={state / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",  # throw-away data: durability buys nothing here
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
            logs,
        )
        self._etcd_healthy = lambda: httpx.get(f"{etcd_url}/health", timeout=2).status_code == 200
        wait_until("etcd", self._etcd_healthy, 30, [etcd])

        server = f"https://127.0.0.1:{api_port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                # A loopback advertise address is refused by the default endpoint reconciler.
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={state / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # kubectl logs/exec reach the node's kubelet with the admin's certificate.
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
                "--v=1",
            ],
            logs,
        )
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._apiserver_ready = lambda: (
            httpx.get(f"{server}/readyz", verify=ctx, timeout=5).status_code == 200
        )
        wait_until("kube-apiserver", self._apiserver_ready, 120, [etcd, apiserver])
        kubeconfig = write_kubeconfig(state / "kubeconfig", server, pki)

        if binaries.kube_controller_manager.exists():
            self._spawn(
                "kube-controller-manager",
                [
                    str(binaries.kube_controller_manager),
                    f"--kubeconfig={kubeconfig}",
                    f"--controllers={CONTROLLERS}" + (f",{NODE_CONTROLLERS}" if self._node else ""),
                    f"--root-ca-file={pki.ca_cert}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--v=1",
                ],
                logs,
            )
        else:
            self._log(
                "kube-controller-manager not found: no garbage collection or namespace deletion"
            )

        node_info = None
        if self._node:
            node_info = self._stack.enter_context(
                start_node(
                    state=state / "node",
                    pki=pki,
                    kubeconfig=kubeconfig,
                    api_port=api_port,
                    client=Client(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER),
                    kubelet=binaries.kube_apiserver.with_name("kubelet"),
                    kube_scheduler=binaries.kube_apiserver.with_name("kube-scheduler"),
                    spawn=lambda name, argv: self._spawn(name, argv, logs),
                    log=self._log,
                )
            )
        cluster = Cluster(
            kubeconfig=kubeconfig,
            server=server,
            managed=True,
            state_dir=state,
            pids=tuple((p.name, p.pid) for p in self.processes),
            node=node_info,
        )
        if self._crds:
            names = apply_crds(cluster.client(), self._crds)
            self._log(f"CRDs established: {', '.join(names) or 'none'}")
        return cluster


def reap_stale(state: Path, log: Callable[[str], None]) -> None:
    """Stop what a killed harness left in `state`: each recorded process still running the same
    binary (an orphaned kube-apiserver), a node's Pods, mounts and network; then the files."""
    pids = state / PIDS_FILE
    with contextlib.suppress(OSError, ValueError):
        for name, pid, argv0 in json.loads(pids.read_text()):
            with contextlib.suppress(OSError):
                running = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                if running == argv0:
                    os.kill(pid, signal.SIGKILL)
                    log(f"killed {name} (pid {pid}) left by an earlier run")
    if (state / "node").exists():
        from localkube.node import clean_host  # needs root; only when a node ran here

        clean_host(state / "node")
    shutil.rmtree(state)


def existing_cluster(crds: Sequence[Path] = (DEFAULT_CRDS,)) -> Cluster:
    """The cluster KUBECONFIG points at (kind, or any cluster you administer), with our CRDs."""
    path = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
    if not path.exists():
        raise RuntimeError(f"USE_EXISTING_CLUSTER is set but the kubeconfig {path} does not exist")
    single = KubeConfig.from_file(path).get()
    if single is None:
        raise RuntimeError(f"{path} has no current context")
    cluster = Cluster(kubeconfig=path, server=single.cluster.server, managed=False)
    if crds:
        apply_crds(cluster.client(), crds)
    return cluster


def use_existing_cluster() -> bool:
    """envtest's switch: USE_EXISTING_CLUSTER=true means "use KUBECONFIG, start nothing"."""
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() in {"1", "true", "yes"}


@contextlib.contextmanager
def start_control_plane(
    *,
    state_dir: Path | None = None,
    crds: Sequence[Path] = (DEFAULT_CRDS,),
    log: Callable[[str], None] = lambda _msg: None,
    node: bool = False,
) -> Iterator[Cluster]:
    """The local control plane (with a node when asked), or the user's own cluster when
    USE_EXISTING_CLUSTER=true (then no node is started: the cluster has its own)."""
    if use_existing_cluster():
        log("USE_EXISTING_CLUSTER=true: using KUBECONFIG, starting nothing")
        yield existing_cluster(crds)
        return
    with ControlPlane(state_dir=state_dir, crds=crds, log=log, node=node) as cluster:
        yield cluster
