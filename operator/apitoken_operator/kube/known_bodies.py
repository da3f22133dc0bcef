"""The newest body of an object this process has seen, so a scheduled run need not GET it.

Two are kept per ApiToken (`Runtime.token_bodies`, `Runtime.secret_bodies`): the ApiToken, and
the managed Secret its run last read or wrote. A run puts the body it ended with: for the
ApiToken the answer of its own status patch (the whole object as the apiserver stored it, newer
than anything the run read) or, when it wrote no status, the body it read; for the Secret the
answer of its last write, or the managed Secret it read. A scheduled run takes those bodies
instead of GETs; anything else that may have changed the objects reads them live.
`invalidate` is called on every wake-up (the ApiToken watch saw a change, or the Secret watch
saw its Secret change), `invalidate_all` when the Secret watch starts again (it may have missed
events), so a body is never used across a change this process was told about; a wake-up that
comes while a run reads makes that run's bodies unusable for the next one (`begin` records the
wake count first). Taking a body removes it, so a run that fails leaves nothing behind and the
next one reads. A Secret kept across a change nobody reported is still safe: its writes are
fenced by the resourceVersion kept with it (`kube.objects.SecretApplier`), so they fail and the
next run reads live.

Bodies are kept as compact JSON, compressed (zlib, with a dictionary of the keys every body
repeats): a Ready ApiToken is about 1.3 KB of JSON against 6.4 KB as Python objects, at 10,000
ApiTokens the difference is 50 MB; compression about halves the JSON again (a sample Secret
1.5 to 0.75 KB, a sample ApiToken 0.9 to 0.3 KB) for about 0.1 ms per body kept and taken
(docs/benchmarks.md, run H).
"""

import json
import zlib
from typing import Any

from apitoken_operator.crd import names

Body = dict[str, Any]
# Kopf's copy of the last handled spec (`handlers.registry.configure`), on ApiTokens an earlier
# version handled: read by nobody now, and the largest annotation; at 10,000 ApiTokens each
# kilobyte kept is 10 MB.
_DIFF_BASE = f"{names.GROUP}/last-handled-configuration"
# What the kept bodies have in common (zlib finds repeats within its dictionary too): keys,
# annotation names and constant values of ApiTokens and their Secrets.
_ZDICT = json.dumps(
    {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": "ApiToken",
        "metadata": {
            "name": "",
            "namespace": "",
            "uid": "",
            "resourceVersion": "",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": [names.FINALIZER],
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY_VALUE},
            "annotations": {
                names.ANNOTATION_TOKEN_ID: "",
                names.ANNOTATION_DATA_HASH: "sha256:",
                names.ANNOTATION_REFRESH_EXPIRES_AT: "",
                names.ANNOTATION_REFRESHED_AT: "",
                names.ANNOTATION_NEXT_REFRESH_AT: "",
            },
            "ownerReferences": [
                {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": True}
            ],
        },
        "spec": {"workspaceRef": {"name": "", "kind": "TokenWorkspace"}, "lifetimeDays": 30},
        "status": {
            "observedGeneration": 1,
            "tokenId": "",
            "secretName": "",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "",
                    "message": "",
                    "lastTransitionTime": "",
                    "observedGeneration": 1,
                }
            ],
        },
        "data": {
            names.KEY_ACCESS_TOKEN: "",
            names.KEY_REFRESH_TOKEN: "",
            names.KEY_TOKEN_TYPE: "QmVhcmVy",
            names.KEY_EXPIRES_AT: "",
        },
        "type": "Opaque",
        "blockOwnerDeletion": True,
    },
    separators=(",", ":"),
).encode()


def _pack(body: Body) -> bytes:
    packer = zlib.compressobj(1, zdict=_ZDICT)
    return packer.compress(json.dumps(body, separators=(",", ":")).encode()) + packer.flush()


def _unpack(packed: bytes) -> Body:
    unpacker = zlib.decompressobj(zdict=_ZDICT)
    return dict(json.loads(unpacker.decompress(packed) + unpacker.flush()))


class KnownBodies:
    def __init__(self) -> None:
        self._bodies: dict[str, bytes] = {}
        self._wakes: dict[str, int] = {}
        self._began: dict[str, tuple[int, int]] = {}
        self._epoch = 0

    def begin(self, uid: str) -> None:
        """A run of `uid` starts reading (called under the ApiToken's lock)."""
        self._began[uid] = (self._epoch, self._wakes.get(uid, 0))

    def take(self, uid: str) -> Body | None:
        packed = self._bodies.pop(uid, None)
        return None if packed is None else _unpack(packed)

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
        self._bodies[uid] = _pack(body)

    def seed(self, uid: str, body: Body) -> None:
        """A body seen before any run of `uid` in this process (the one the ApiToken watch
        delivered, listed or new); ignored once a run began."""
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
