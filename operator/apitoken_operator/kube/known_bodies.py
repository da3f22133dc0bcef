"""The newest ApiToken body this process has seen, so a scheduled run need not GET it.

A run puts the body it ended with: the answer of its own status patch (the whole object as
the apiserver stored it, newer than anything the run read) or, when it wrote no status, the
body it read. A scheduled run takes that body instead of a GET; anything else that may have
changed the object reads it live. `invalidate` is called on every wake-up (Kopf saw an event
of the ApiToken, or the Secret watch saw its Secret change), so a body is never used across
a change this process was told about; a wake-up that comes while a run reads the object
makes that run's body unusable for the next one (`begin` records the wake count first).
Taking a body removes it, so a run that fails leaves nothing behind and the next one reads.
"""

from typing import Any

from apitoken_operator.crd import names

Body = dict[str, Any]
# Kopf's copy of the last handled spec (`handlers.registry.configure`): read by Kopf only, and
# the largest annotation; at 10,000 ApiTokens each kilobyte kept is 10 MB.
_DIFF_BASE = f"{names.GROUP}/last-handled-configuration"


class KnownBodies:
    def __init__(self) -> None:
        self._bodies: dict[str, Body] = {}
        self._wakes: dict[str, int] = {}
        self._began: dict[str, int] = {}

    def begin(self, uid: str) -> None:
        """A run of `uid` starts reading (called under the ApiToken's lock)."""
        self._began[uid] = self._wakes.get(uid, 0)

    def take(self, uid: str) -> Body | None:
        return self._bodies.pop(uid, None)

    def put(self, uid: str, body: Body) -> None:
        if self._began.get(uid) != self._wakes.get(uid, 0):
            return  # woken since the run began reading: the next run reads live
        meta = body.get("metadata")
        if isinstance(meta, dict):
            # managedFields and Kopf's diff base are read by no decision.
            kept = {k: v for k, v in meta.items() if k != "managedFields"}
            annotations = meta.get("annotations")
            if isinstance(annotations, dict) and _DIFF_BASE in annotations:
                kept["annotations"] = {k: v for k, v in annotations.items() if k != _DIFF_BASE}
            body = {**body, "metadata": kept}
        self._bodies[uid] = body

    def invalidate(self, uid: str) -> None:
        self._wakes[uid] = self._wakes.get(uid, 0) + 1
        self._bodies.pop(uid, None)

    def forget(self, uid: str) -> None:
        self._bodies.pop(uid, None)
        self._wakes.pop(uid, None)
        self._began.pop(uid, None)
