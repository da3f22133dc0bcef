"""Namespaces' labels and deletion state from a watch, instead of a GET on every ApiToken run.

One lightkube watch per served scope: over all Namespaces when the operator serves all of
them, else one per served namespace, narrowed server-side to that name (a field selector), so
the operator never holds labels of namespaces it does not serve. Until a scope's watch has
delivered its first answer (and again after the watch failed, until it is back), `state`
falls back to a live GET: a run never decides on a cache that has not synced.
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace

from apitoken_operator.kube.objects import NamespaceState, namespace_state

log = logging.getLogger(__name__)

_ALL = ""


def state_of(meta: Mapping[str, Any], status: Mapping[str, Any]) -> NamespaceState:
    """The same reading as `namespace_state`, from a watch event's object."""
    terminating = bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating"
    return NamespaceState(dict(meta.get("labels") or {}), terminating)


class NamespaceCache:
    def __init__(self, client: AsyncClient, served: Sequence[str]) -> None:
        self._client = client
        self._scopes: tuple[str, ...] = tuple(served) or (_ALL,)
        self._states: dict[str, NamespaceState] = {}
        # Scopes whose watch is running and has listed what exists.
        self._synced: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def _scope_of(self, namespace: str) -> str | None:
        if _ALL in self._scopes:
            return _ALL
        return namespace if namespace in self._scopes else None

    async def state(self, namespace: str) -> NamespaceState:
        self._start()
        scope = self._scope_of(namespace)
        if scope is not None and scope in self._synced:
            # Absent from a synced watch: gone (the GET would say the same, 404).
            return self._states.get(namespace, NamespaceState({}, terminating=True))
        return await namespace_state(self._client, namespace)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch_all(), name="namespace-cache")

    async def _watch_all(self) -> None:
        await asyncio.gather(*(self._watch(scope) for scope in self._scopes))

    async def _watch(self, scope: str) -> None:
        fields: dict[str, Any] | None = {"metadata.name": scope} if scope else None
        delay = 1.0
        while True:
            try:
                # List first (one page per scope: a name, or all Namespaces), then watch from
                # the list's resourceVersion, so the cache counts as synced only once complete.
                listing = self._client.list(Namespace, fields=fields)
                seen: dict[str, NamespaceState] = {}
                async for ns in listing:
                    body = ns.to_dict()
                    seen[str(body["metadata"]["name"])] = state_of(
                        body["metadata"], body.get("status") or {}
                    )
                self._replace(scope, seen)
                self._synced.add(scope)
                delay = 1.0
                version = listing.resourceVersion
                async for event_type, ns in self._client.watch(
                    Namespace, fields=fields, resource_version=version
                ):
                    body = ns.to_dict()
                    name = str(body["metadata"]["name"])
                    if event_type == "DELETED":
                        self._states.pop(name, None)
                    else:
                        self._states[name] = state_of(body["metadata"], body.get("status") or {})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watch is restarted whatever went wrong
                log.warning("Namespace watch failed (%s); restarting", type(exc).__name__)
            # Until the list is read again, runs read Namespaces live.
            self._synced.discard(scope)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _replace(self, scope: str, seen: dict[str, NamespaceState]) -> None:
        if scope:
            self._states.pop(scope, None)
        else:
            self._states.clear()
        self._states.update(seen)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
