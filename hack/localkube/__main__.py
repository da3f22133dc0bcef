"""`make dev`: the local system in the foreground until Ctrl-C.

Starts the control plane (or uses your cluster with USE_EXISTING_CLUSTER=true), copies its
kubeconfig to .dev/kubeconfig, prints what runs and how to look around, and cleans up on exit.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from localkube.controlplane import REPO, start_control_plane


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localkube", description=__doc__)
    parser.add_argument("--dev-dir", type=Path, default=REPO / ".dev")
    parser.add_argument(
        "--exit-after", type=float, default=None, help="stop after N seconds (for tests)"
    )
    args = parser.parse_args(argv)

    _stop_on_signals()
    dev_dir: Path = args.dev_dir
    dev_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = dev_dir / "kubeconfig"
    started = time.monotonic()
    try:
        with start_control_plane(state_dir=dev_dir / "controlplane", log=_say) as cluster:
            shutil.copyfile(cluster.kubeconfig, kubeconfig)
            kubeconfig.chmod(0o600)
            kubectl = Path(sys.executable).parent / "kubectl"
            _say(f"control plane ready in {time.monotonic() - started:.1f}s: {cluster.server}")
            print(
                f"""
  kubeconfig   {kubeconfig}
  processes    {", ".join(f"{n}[{pid}]" for n, pid in cluster.pids) or "none (existing cluster)"}

  Look around:
    export KUBECONFIG={kubeconfig}
    {kubectl} get namespaces
    {kubectl} get crds
    {kubectl} api-resources --api-group=apitoken.dev

  Ctrl-C stops everything and removes the cluster's state.
""",
                flush=True,
            )
            stop = threading.Event()
            stop.wait(args.exit_after)  # None: until Ctrl-C or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        kubeconfig.unlink(missing_ok=True)
    _say("stopped and cleaned up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
