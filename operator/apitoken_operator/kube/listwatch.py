"""List, then watch from the list's resourceVersion: what client-go's reflector does.

A lightkube watch started without a resourceVersion sends every existing object as a synthetic
ADDED event, and when its stream ends (the apiserver's timeout, or a consumer too slow for its
buffer, which a start-up with 10,000 objects is) lightkube resumes from the resourceVersion of
the last object it decoded. In the middle of those synthetic events that version is any
object's, so every object not delivered yet and unchanged since is never delivered: a restart
at 10,000 ApiTokens lost 332 of them that way (docs/benchmarks.md, run I). A list is a
consistent snapshot (its pages share one resourceVersion), and the watch from its version then
gives events in order, so resuming from the last one delivered is exact. A watch too far
behind (410 Gone) raises, and the caller lists again.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.core.client import LabelSelector

# Objects per list page: a bounded answer (Kopf lists in one request, which made another
# Kopf-based worker run out of memory at size).
PAGE = 500
# Listed objects handed over between two turns of the event loop at most.
STEP = 50


async def list_then_watch(
    client: AsyncClient,
    resource: Any,
    *,
    namespace: str,
    labels: LabelSelector | None = None,
    listed: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[str, Any]]:
    """Every object now as ADDED, page by page, then the watch's events from that snapshot;
    `listed` is called in between, once the last listed object was handed over."""
    listing = client.list(resource, namespace=namespace, labels=labels, chunk_size=PAGE)
    count = 0
    async for obj in listing:
        yield "ADDED", obj
        count += 1
        if count % STEP == 0:
            # Let the runs that fell due meanwhile go: digesting a page in one go held them
            # back and they went out together afterwards (docs/benchmarks.md, run L).
            await asyncio.sleep(0)
    version = listing.resourceVersion
    if listed is not None:
        listed()
    async for event_type, obj in client.watch(
        resource, namespace=namespace, labels=labels, resource_version=version
    ):
        yield event_type, obj
