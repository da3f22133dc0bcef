"""Kubernetes events the operator posts itself (core/v1 Events, as `kubectl describe` shows).

`kopf.event` works only inside Kopf's per-object handler context (its event queue is a
context variable set there), so the scheduler's runs, which Kopf does not start, post through
this, and the workspace handlers too (one poster). Like Kopf's poster, a queue and tasks of
its own: a run only enqueues, posting never delays or fails a run, and a failed post is logged
with its status code only (the message may name a Secret, never a value, but an apiserver may
echo what it was sent).
"""

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event

from apitoken_operator.kube.objects import error_detail

log = logging.getLogger(__name__)

COMPONENT = "apitoken-operator"
# The apiserver refuses longer messages; Kopf cuts at the same length.
MAX_MESSAGE = 1024
# Events waiting to be posted at most (about 1 KB each); beyond, new ones are dropped (and
# logged). 10,000 ApiTokens applied at once queue one each.
QUEUE_LIMIT = 20_000
# Posts in flight: one at a time kept up with 1,000 new ApiTokens, not with 10,000 (1,786 of
# them were dropped at 2,000 waiting, docs/benchmarks.md, run J).
POSTERS = 8


def event_manifest(
    involved: Mapping[str, Any],
    *,
    type: str,
    reason: str,
    message: str,
    now: datetime,
    instance: str,
) -> dict[str, Any]:
    """The Event about the object `involved` (its body as the apiserver returned it)."""
    meta = involved.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE // 2 - 2] + "..." + message[-(MAX_MESSAGE // 2 - 1) :]
    stamp = now.isoformat()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": f"{COMPONENT}-"},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": type,
        "reason": reason,
        "message": message,
        "action": reason,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": stamp,
        "count": 1,
    }


class EventPoster:
    def __init__(self, kube: AsyncClient, *, instance: str) -> None:
        self._kube = kube
        self._instance = instance
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self.dropped = 0

    def post(
        self, involved: Mapping[str, Any], *, type: str, reason: str, message: str, now: datetime
    ) -> None:
        manifest = event_manifest(
            involved, type=type, reason=reason, message=message, now=now, instance=self._instance
        )
        try:
            self._queue.put_nowait(manifest)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("event %s dropped: %d events waiting", reason, QUEUE_LIMIT)

    async def run(self) -> None:
        """Post until cancelled, `POSTERS` at a time."""
        await asyncio.gather(*(self._post_each() for _ in range(POSTERS)))

    async def _post_each(self) -> None:
        while True:
            manifest = await self._queue.get()
            try:
                await self._kube.create(cast(Event, Event.from_dict(manifest)))
            except Exception as exc:  # auxiliary: a lost event must not stop the others
                log.warning("posting event %s failed (%s)", manifest["reason"], error_detail(exc))
            finally:
                self._queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the events queued to be posted (at shutdown)."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.info("%d events not posted at shutdown", self._queue.qsize())
