"""Run `apitoken-service` under cProfile: `python -m bench.profiled_service OUT.prof ARGS...`.

The profiler measures only between SIGUSR1 (start) and SIGUSR2 (stop), so start-up and the
seeding of tokens stay out of the figures; the bench signals around the measured load. The
service stops on SIGINT (uvicorn's graceful shutdown), `main()` returns and the profile is
written. cProfile sees the main thread, where the event loop runs the request handling;
worker threads (aiosqlite's, the threadpool's) are measured apart, per thread, by the bench.
"""

from __future__ import annotations

import cProfile
import importlib
import signal
import sys
import time
from types import FrameType


def main(argv: list[str]) -> int:
    service_main = importlib.import_module("apitoken_service.cli").main
    out, *service_args = argv
    sys.argv = ["apitoken-service", *service_args]
    # CPU time of this thread, not wall time: the event loop's idle waits would drown the
    # figures, and on a busy 2-core machine wall time also counts other processes' turns.
    profiler = cProfile.Profile(time.thread_time)

    def start(_signum: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profiler.disable()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        service_main()
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
