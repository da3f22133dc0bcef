"""One real node on this host: containerd, kubelet and kube-scheduler, a bridge pod network and
just enough cluster DNS, with every host-global change undone on stop.

The node is root-only and host-global (the `cni0` bridge, kubelet's ports 10250/10248, iptables,
cgroups), so it takes a machine-wide lock; whatever an unclean stop left behind is removed before
a start. Network rule: Pods reach this host only. No masquerade, forwarding out of the pod network
is dropped, and the one NAT is the `kubernetes` Service address to the loopback apiserver. DNS
(dnsmasq, no upstream) answers only cluster names: the `kubernetes` Service and every Service
with ready endpoints, by its endpoints' addresses (there is no kube-proxy, so a Service is
reached on its target port, as with a headless Service).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml
from lightkube import Client
from lightkube.resources.core_v1 import Node as NodeResource
from lightkube.resources.discovery_v1 import EndpointSlice

from localkube.pki import Pki
from localkube.processes import Process

NODE_NAME = "apitoken-node"
BRIDGE = "cni0"
POD_CIDR = "10.88.0.0/16"
GATEWAY = "10.88.0.1"  # the bridge's address: node IP, DNS server and the Pods' default route
DNS_LISTEN = f"--listen-address={GATEWAY}"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service (first address of the service range)
CLUSTER_DOMAIN = "cluster.local"
CHAIN = "APITOKEN-NODE"
LOCK = Path("/run/apitoken-localnode.lock")
# kubelet re-reads mounted Secrets on its sync: 2 s keeps a refreshed token's delay to seconds
# (kubelet's default, 1m, gives about a minute; docs/usage.md has both figures). Set
# LOCALKUBE_KUBELET_SYNC_FREQUENCY (a Go duration) to measure another value.
SYNC_FREQUENCY = os.environ.get("LOCALKUBE_KUBELET_SYNC_FREQUENCY", "2s")
CNI_BIN = Path("/usr/lib/cni")
# containerd 1.6 writes some state outside its root; removed on stop (we hold the lock).
CONTAINERD_LEFTOVERS = (Path("/run/containerd"), Path("/var/lib/cni"))


@dataclass(frozen=True)
class NodeInfo:
    name: str
    containerd_socket: Path
    pause_image: str


class NodeError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _sysctl(name: str, value: str | None = None) -> str:
    path = Path("/proc/sys") / name.replace(".", "/")
    old = path.read_text().strip()
    if value is not None:
        path.write_text(value)
    return old


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    if os.geteuid() != 0:
        raise NodeError("the local node needs root (containerd, kubelet, a bridge, iptables)")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = LOCK.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise NodeError(f"another local node runs on this machine (lock {LOCK})") from None
    try:
        yield
    finally:
        handle.close()


# ---------------------------------------------------------------------------------------------
# Cleaning up: the same code after a normal stop and before a start that follows a crash.


def _pod_cgroup_dirs() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    found: list[Path] = []
    for controller in root.iterdir() if root.exists() else []:
        for top in (controller / "kubepods", controller / "kubepods.slice"):
            if top.is_dir():
                found.extend(sorted(top.rglob("*"), key=lambda p: -len(p.parts)))
                found.append(top)
    return [p for p in found if p.is_dir()]


def _leftover_processes() -> list[int]:
    """Process ids of every containerd shim and of the node's dnsmasq on this machine."""
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            # dnsmasq switches to group dip, which clears PDEATHSIG: a killed harness leaves it
            # bound to the bridge address, answering the next node's names from old files.
            stale_dns = cmdline[0].endswith(b"dnsmasq") and DNS_LISTEN.encode() in cmdline
            if cmdline[0].endswith(b"containerd-shim-runc-v2") or stale_dns:
                found.append(int(proc.name))
    return found


def _kill_pods() -> None:
    """SIGKILL every process in a Pod cgroup, then every containerd shim and our dnsmasq; remove
    the cgroups."""
    dirs = _pod_cgroup_dirs()
    for d in dirs:
        with contextlib.suppress(OSError):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for leftover in _leftover_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(leftover, signal.SIGKILL)
    deadline = time.monotonic() + 10
    for d in dirs:
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)


def _unmount_under(*folders: Path) -> None:
    """Lazily unmount every mount below the folders (Secret volumes, rootfs, netns, shm)."""
    prefixes = tuple(str(f.resolve()) + "/" for f in folders)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted(
        (m.replace("\\040", " ") for m in mounts if m.startswith(prefixes)), key=len, reverse=True
    ):
        _run("umount", "-l", target, check=False)


def _remove_network() -> None:
    for table, parent in (("nat", "PREROUTING"), ("filter", "FORWARD"), ("filter", "INPUT")):
        while _run("iptables", "-t", table, "-D", parent, "-j", CHAIN, check=False).returncode == 0:
            pass
        _run("iptables", "-t", table, "-F", CHAIN, check=False)
        _run("iptables", "-t", table, "-X", CHAIN, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    # veth ends left by a crash go with their netns; host-local IPAM state lives in our folder.


def clean_host(state: Path | None = None) -> None:
    """Undo everything a node may have left: Pods, shims, mounts, the bridge, our iptables
    chains, containerd's stray folders. Safe to call when nothing is there."""
    _kill_pods()
    if state is not None and state.exists():
        _unmount_under(state)
    for leftover in CONTAINERD_LEFTOVERS:
        if leftover.exists():
            _unmount_under(leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    _remove_network()


# ---------------------------------------------------------------------------------------------
# Configuration files.


def _containerd_config(state: Path, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{state}/containerd/root"
state = "{state}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{state}/containerd.sock"
[{cri}]
  sandbox_image = "{pause_image}"
  # Our processes lack CAP_SYS_RESOURCE: runc could not set the negative OOM score CRI asks for.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{state}/runc"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{state}/cni/net.d"
"""


def _cni_conflist(state: Path) -> dict[str, object]:
    return {
        "cniVersion": "0.4.0",
        "name": "apitoken-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # Pods talk to this host only: nothing is NATed outwards
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(state / "cni" / "ipam"),
                },
            }
        ],
    }


def _kubelet_config(state: Path, pki: Pki, socket: Path) -> dict[str, object]:
    empty_resolv = state / "resolv.conf"
    empty_resolv.write_text("")  # no search domains or servers of the host leak into Pods
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # 1.35+ refuses cgroup v1 otherwise; our machines have v1
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "address": GATEWAY,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "authentication": {
            "x509": {"clientCAFile": str(pki.ca_cert)},
            "webhook": {"enabled": False},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "AlwaysAllow"},  # only clients with our CA's certificate
        "clusterDNS": [GATEWAY],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(empty_resolv),
        "syncFrequency": SYNC_FREQUENCY,
        # The local images cannot be pulled again: never collect them, never evict for disk.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "podLogsDir": str(state / "pod-logs"),
        "serializeImagePulls": False,
        "registerNode": True,
    }


# ---------------------------------------------------------------------------------------------
# DNS: cluster names only, from EndpointSlices.


class ClusterDns:
    """dnsmasq on the bridge address answering `<service>.<namespace>.svc.cluster.local` from a
    hosts folder it watches, which a thread keeps in step with the cluster's EndpointSlices."""

    def __init__(self, state: Path, client: Client, spawn: Callable[[str, list[str]], Process]):
        self._hosts = state / "dns-hosts"
        self._hosts.mkdir(parents=True, exist_ok=True)
        self._client = client
        self._stop = threading.Event()
        self._written = ""
        self._write(self._records())
        spawn(
            "dnsmasq",
            [
                shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
                "--keep-in-foreground",
                "--log-facility=-",
                "--no-resolv",  # no upstream: names outside the cluster get no answer
                "--no-hosts",
                "--no-poll",
                f"--hostsdir={self._hosts}",
                DNS_LISTEN,
                "--bind-interfaces",
                "--except-interface=lo",
                f"--local=/{CLUSTER_DOMAIN}/",
                f"--pid-file={state / 'dnsmasq.pid'}",
                "--user=root",
            ],
        )
        self._thread = threading.Thread(target=self._loop, name="cluster-dns", daemon=True)
        self._thread.start()

    def _records(self) -> str:
        lines = [f"{SERVICE_IP} kubernetes.default.svc.{CLUSTER_DOMAIN}"]
        with contextlib.suppress(Exception):
            for eps in self._client.list(EndpointSlice, namespace="*"):
                labels = eps.metadata.labels or {} if eps.metadata else {}
                service = labels.get("kubernetes.io/service-name")
                if not service or eps.metadata is None:
                    continue
                name = f"{service}.{eps.metadata.namespace}.svc.{CLUSTER_DOMAIN}"
                for endpoint in eps.endpoints or []:
                    ready = endpoint.conditions is None or endpoint.conditions.ready is not False
                    if ready:
                        lines.extend(f"{address} {name}" for address in endpoint.addresses)
        return "\n".join(sorted(set(lines))) + "\n"

    def _write(self, text: str) -> None:
        if text == self._written:
            return
        tmp = self._hosts.parent / "dns-hosts.tmp"
        tmp.write_text(text)
        tmp.replace(self._hosts / "cluster")  # dnsmasq re-reads the folder on each change
        self._written = text

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._write(self._records())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Starting.


def _network(api_port: int) -> Callable[[], None]:
    """The bridge, route_localnet, the DNAT of the `kubernetes` Service, and a forward drop for
    anything leaving the pod network. Returns the undo of the sysctls."""
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{GATEWAY}/16", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    forward = _sysctl("net.ipv4.ip_forward")
    _sysctl(f"net.ipv4.conf.{BRIDGE}.route_localnet", "1")  # DNAT to 127.0.0.1 from the bridge
    for table in ("nat", "filter"):
        _run("iptables", "-t", table, "-N", CHAIN)
    ipt = ("iptables", "-t", "nat", "-A", CHAIN)
    _run(
        *ipt,
        "-s",
        POD_CIDR,
        "-d",
        f"{SERVICE_IP}/32",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-j",
        "DNAT",
        "--to-destination",
        f"127.0.0.1:{api_port}",
    )
    _run("iptables", "-t", "nat", "-I", "PREROUTING", "-j", CHAIN)
    # The bridge plugin turns on forwarding for its gateway; nothing may leave the pod network.
    _run("iptables", "-t", "filter", "-A", CHAIN, "-s", POD_CIDR, "!", "-d", POD_CIDR, "-j", "DROP")
    _run("iptables", "-t", "filter", "-A", CHAIN, "!", "-s", POD_CIDR, "-d", POD_CIDR, "-j", "DROP")
    _run("iptables", "-t", "filter", "-I", "FORWARD", "-j", CHAIN)

    def undo() -> None:
        with contextlib.suppress(OSError):
            _sysctl("net.ipv4.ip_forward", forward)

    return undo


def images_to_import() -> dict[str, Path]:
    """Build (or reuse) the images: pause, operator, token service. NAME -> OCI archive."""
    script = Path(__file__).resolve().parent.parent / "build-images.sh"
    done = subprocess.run([str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return {k: Path(v) for k, v in (ln.split("=", 1) for ln in done.stdout.split() if "=" in ln)}


@contextlib.contextmanager
def start_node(
    *,
    state: Path,
    pki: Pki,
    kubeconfig: Path,
    api_port: int,
    client: Client,
    kubelet: Path,
    kube_scheduler: Path,
    spawn: Callable[[str, list[str]], Process],
    log: Callable[[str], None],
) -> Iterator[NodeInfo]:
    """The node, Ready and untainted; on leaving, everything it changed on the host is undone.
    `spawn` starts a process that the caller stops (in reverse order) when the stack unwinds;
    this context stops the node's own processes first."""
    started = time.monotonic()
    images = images_to_import()
    with _machine_lock(), contextlib.ExitStack() as stack:
        clean_host()  # an unclean stop of an earlier node left these
        stack.callback(clean_host, state)
        state.mkdir(parents=True, exist_ok=True)
        stack.callback(_unmount_under, state)
        stack.callback(_run, "ip", "link", "delete", BRIDGE, check=False)
        stack.callback(_network(api_port))
        (state / "cni" / "net.d").mkdir(parents=True, exist_ok=True)

        processes: list[Process] = []

        def own(name: str, argv: list[str]) -> Process:
            proc = spawn(name, argv)
            processes.append(proc)
            stack.callback(proc.stop)
            return proc

        # Written before containerd starts: it reloads its CNI config on every file event.
        conflist = state / "cni" / "net.d" / "10-apitoken.conflist"
        conflist.write_text(json.dumps(_cni_conflist(state), indent=2))
        pause = "localhost/pause:apitoken"
        config = state / "containerd.toml"
        config.write_text(_containerd_config(state, pause))
        containerd = own("containerd", ["containerd", "--config", str(config)])
        socket = state / "containerd.sock"
        ctr = ["ctr", "--address", str(socket), "--namespace", "k8s.io"]
        deadline = time.monotonic() + 30
        while _run(*ctr, "version", check=False).returncode != 0:
            containerd.check_alive()
            if time.monotonic() > deadline:
                raise NodeError(f"containerd not ready:\n{containerd.log_tail()}")
            time.sleep(0.2)
        for archive in images.values():
            _run(*ctr, "images", "import", str(archive))
        log(f"containerd ready, images imported: {', '.join(sorted(images))}")

        dns = ClusterDns(state, client, own)
        stack.callback(dns.stop)

        kubelet_config = state / "kubelet.yaml"
        kubelet_config.write_text(yaml.safe_dump(_kubelet_config(state, pki, socket)))
        own(
            "kube-scheduler",
            [
                str(kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        kubelet_proc = own(
            "kubelet",
            [
                str(kubelet),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={state / 'kubelet'}",
                f"--cert-dir={state / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--v=1",
            ],
        )

        last: list[str] = []

        def ready() -> bool:
            kubelet_proc.check_alive()
            with contextlib.suppress(Exception):
                node = client.get(NodeResource, NODE_NAME)
                conditions = (node.status.conditions if node.status else None) or []
                taints = (node.spec.taints if node.spec else None) or []
                last[:] = [f"{c.type}={c.status} {c.message}" for c in conditions]
                last.extend(f"taint {t.key}:{t.effect}" for t in taints)
                return not taints and any(
                    c.type == "Ready" and c.status == "True" for c in conditions
                )
            return False

        deadline = time.monotonic() + 90
        while not ready():
            if time.monotonic() > deadline:
                raise NodeError(
                    f"node {NODE_NAME} not Ready after 90s: {'; '.join(last)}\n"
                    f"{containerd.log_tail()}"
                )
            time.sleep(0.5)
        log(f"node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")
        yield NodeInfo(name=NODE_NAME, containerd_socket=socket, pause_image=pause)
        # The stack now stops, in reverse: kubelet, scheduler, dnsmasq, containerd, then Pods,
        # mounts, network. kubelet first, so it does not restart what we kill.
