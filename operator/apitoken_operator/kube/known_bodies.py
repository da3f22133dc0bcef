"""The newest body of an object this process has seen, so a scheduled run need not GET it.

Two are kept per ApiToken (`Runtime.token_bodies`, `Runtime.secret_bodies`): the ApiToken, and
the managed Secret its run last read or wrote. A run puts the body it ended with: for the
ApiToken the answer of its own status patch (the whole object as the apiserver stored it, newer
than anything the run read) or, when it wrote no status, the body it read; for the Secret the
answer of its last write, or the managed Secret it read. A scheduled run takes those bodies
instead of GETs; anything else that may have changed the objects reads them live.
`invalidate` is called on every wake-up (Kopf saw an event of the ApiToken, or the Secret watch
saw its Secret change), `invalidate_all` when the Secret watch starts again (it may have missed
events), so a body is never used across a change this process was told about; a wake-up that
comes while a run reads makes that run's bodies unusable for the next one (`begin` records the
wake count first). Taking a body removes it, so a run that fails leaves nothing behind and the
next one reads. A Secret kept across a change nobody reported is still safe: its writes are
fenced by the resourceVersion kept with it (`kube.objects.SecretApplier`), so they fail and the
next run reads live.

Bodies are kept as compact JSON text: about 1.3 KB for a Ready ApiToken against 6.4 KB as
Python objects, at 10,000 ApiTokens the difference is 50 MB (docs/benchmarks.md).
"""

import json
from typing import Any

from apitoken_operator.crd import names

Body = dict[str, Any]
# Kopf's copy of the last handled spec (`handlers.registry.configure`): read by Kopf only, and
# the largest annotation; at 10,000 ApiTokens each kilobyte kept is 10 MB.
_DIFF_BASE = f"{names.GROUP}/last-handled-configuration"


class KnownBodies:
    def __init__(self) -> None:
        self._bodies: dict[str, str] = {}
        self._wakes: dict[str, int] = {}
        self._began: dict[str, tuple[int, int]] = {}
        self._epoch = 0

    def begin(self, uid: str) -> None:
        """A run of `uid` starts reading (called under the ApiToken's lock)."""
        self._began[uid] = (self._epoch, self._wakes.get(uid, 0))

    def take(self, uid: str) -> Body | None:
        text = self._bodies.pop(uid, None)
        return None if text is None else dict(json.loads(text))

    def put(self, uid: str, body: Body | None) -> None:
        if body is None or self._began.get(uid) != (self._epoch, self._wakes.get(uid, 0)):
            return  # woken since the run began reading: the next run reads live
        meta = body.get("metadata")
        if isinstance(meta, dict):
            # managedFields and Kopf's diff base are read by no decision.
            kept = {k: v for k, v in meta.items() if k != "managedFields"}
            annotations = meta.get("annotations")
            if isinstance(annotations, dict) and _DIFF_BASE in annotations:
                kept["annotations"] = {k: v for k, v in annotations.items() if k != _DIFF_BASE}
            body = {**body, "metadata": kept}
        self._bodies[uid] = json.dumps(body, separators=(",", ":"))

    def seed(self, uid: str, body: Body) -> None:
        """A body seen before any run of `uid` in this process (the one Kopf's start-up listing
        hands the resume handler); ignored once a run began."""
        if uid not in self._began:
            self.begin(uid)
            self.put(uid, body)
            del self._began[uid]

    def invalidate(self, uid: str) -> None:
        self._wakes[uid] = self._wakes.get(uid, 0) + 1
        self._bodies.pop(uid, None)

    def invalidate_all(self) -> None:
        self._epoch += 1
        self._bodies.clear()

    def forget(self, uid: str) -> None:
        self._bodies.pop(uid, None)
        self._wakes.pop(uid, None)
        self._began.pop(uid, None)
