"""Run `apitoken-service` under cProfile: `python -m bench.profiled_service OUT.prof ARGS...`.

The service stops on SIGINT (uvicorn's graceful shutdown), so `main()` returns and the profile
is written. cProfile sees one thread; the service's request handling runs on the event loop in
that thread, which is where the refresh grant spends its CPU.
"""

from __future__ import annotations

import cProfile
import importlib
import sys


def main(argv: list[str]) -> int:
    service_main = importlib.import_module("apitoken_service.cli").main
    out, *service_args = argv
    sys.argv = ["apitoken-service", *service_args]
    profiler = cProfile.Profile()
    profiler.enable()
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
