"""Run the test PostgreSQL server so that it dies with the test process that started it.

`python postgres_watchdog.py [--uid U --gid G] --remove ROOT -- postgres ...` starts postgres (as
U:G when given: initdb and postgres refuse root) and reads its own stdin, a pipe whose other end
only the test process holds. `stop` on that pipe is a normal stop; end of file without it means
the test process died (SIGKILL, a crash): then the server is stopped as well and ROOT, its
throwaway folder, removed. PR_SET_PDEATHSIG cannot do this: the kernel clears it when the child
changes user, and the watchdog itself stays the test process's user, so it needs no signal from
the kernel at all, only the pipe's end.

Either way postgres gets SIGINT (its fast shutdown) and SIGKILL if it is not gone after
STOP_TIMEOUT_S; the watchdog exits with postgres's exit status.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import threading

STOP_TIMEOUT_S = 20.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--remove", required=True, help="removed when the parent died")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    server = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        user=args.uid,
        group=args.gid,
        # Drop root's supplementary groups too when switching user.
        extra_groups=None if args.uid is None else [],
    )
    stopping = threading.Lock()

    def stop() -> None:
        if not stopping.acquire(blocking=False):
            return
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()

    def watch_parent() -> None:
        told = sys.stdin.buffer.read()  # returns at end of file: the parent closed it or died
        stop()
        if b"stop" not in told:
            server.wait()
            shutil.rmtree(args.remove, ignore_errors=True)

    # Terminated itself: pass it on as postgres's fast shutdown and exit with it below.
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
    watcher = threading.Thread(target=watch_parent, daemon=True)
    watcher.start()
    status = server.wait()
    # Postgres stopped on its own (a failed start): the parent reads the log and decides.
    # Told to stop or orphaned: let the watcher finish removing the folder first.
    if stopping.locked():
        watcher.join(timeout=STOP_TIMEOUT_S)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
