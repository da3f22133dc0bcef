"""Jobs run at a bounded concurrency, and the time they all took: the baselines' runner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
from lightkube import AsyncClient

Job = Callable[[], Awaitable[None]]


async def bounded(concurrency: int, jobs: list[Job]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Job) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(run(j) for j in jobs))


async def timed(
    concurrency: int, jobs: list[Job], kube: AsyncClient, http: httpx.AsyncClient
) -> float:
    """Seconds for all `jobs`, `concurrency` at a time; the clients are closed after."""
    started = time.monotonic()
    try:
        await bounded(concurrency, jobs)
    finally:
        await kube.close()
        await http.aclose()
    return time.monotonic() - started
