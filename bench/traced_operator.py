"""`apitoken-operator` under tracemalloc, for `bench.memory_probe`: SIGUSR1 writes a snapshot
to $TRACED_SNAPSHOT_DIR/<n>.snap; SIGUSR2 calls glibc's malloc_trim(0) and touches
$TRACED_SNAPSHOT_DIR/trimmed, so the probe can tell how much of the RSS is memory freed but
kept by the allocator (the operator itself is unchanged)."""

import ctypes
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

from apitoken_operator.cli import main

count = 0


def dump(signum: int, frame: FrameType | None) -> None:
    global count
    count += 1
    target = Path(os.environ["TRACED_SNAPSHOT_DIR"]) / f"{count}.snap"
    tracemalloc.take_snapshot().dump(str(target))
    target.with_suffix(".done").touch()


def trim(signum: int, frame: FrameType | None) -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    (Path(os.environ["TRACED_SNAPSHOT_DIR"]) / "trimmed").touch()


if __name__ == "__main__":
    tracemalloc.start(int(os.environ.get("TRACED_FRAMES", "12")))
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, trim)
    sys.exit(main(sys.argv[1:]))
