"""Hand memory the allocator keeps back to the system, now and then (glibc only).

A burst (thousands of ApiTokens applied at once, a restart that finds thousands) decodes
bodies, fills HTTP buffers and Kopf's per-event state all at once. Freed afterwards, most of it
stays mapped by glibc's malloc: the resident memory stays at the burst's high water although
the live objects are a fraction of it (docs/benchmarks.md, "Memory"). `malloc_trim(0)` returns
the free pages; it runs in a thread (ctypes releases the GIL), so the event loop goes on.
"""

import asyncio
import ctypes
from collections.abc import Callable


def glibc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where there is no glibc (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    return lambda: trim(0)


async def trim_every(seconds: float, trim: Callable[[], object] | None) -> None:
    """Run until cancelled: `trim` every `seconds` (nothing when either is off)."""
    if trim is None or seconds <= 0:
        return
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(trim)
