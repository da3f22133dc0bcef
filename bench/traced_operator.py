"""`apitoken-operator` under tracemalloc, for `bench.memory_probe`: SIGUSR1 writes a snapshot
to $TRACED_SNAPSHOT_DIR/<n>.snap (the operator itself is unchanged)."""

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


if __name__ == "__main__":
    tracemalloc.start(int(os.environ.get("TRACED_FRAMES", "12")))
    signal.signal(signal.SIGUSR1, dump)
    sys.exit(main(sys.argv[1:]))
