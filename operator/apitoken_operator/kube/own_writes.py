"""Which changes of managed Secrets are the operator's own, so its own writes wake nobody.

A write is the operator's own when the watch delivers the resourceVersion the write's answer
carried. The watch and the answer come on different connections, and the watch's event often
comes first (at 10,000 ApiTokens about half of the refreshes did, measured: each then woke its
ApiToken for a second run that read the ApiToken and the Secret live). So while a write is in
flight its Secret's events are held, and its end decides: the event of this very write is
dropped, any other still wakes (and all of them when the write failed).
"""

from collections.abc import Iterable, Mapping

Key = tuple[str, str]  # (namespace, Secret name)


class OwnWrites:
    def __init__(self) -> None:
        self._last: dict[Key, str] = {}
        self._in_flight: set[Key] = set()
        self._held: dict[Key, dict[str, set[str]]] = {}

    def begin(self, key: Key) -> None:
        """A write of `key` is sent (one at a time per Secret: a run holds its lock)."""
        self._in_flight.add(key)

    def end(self, key: Key, resource_version: str | None) -> set[str]:
        """The write's answer (None: it failed): what to wake for the events held meanwhile."""
        self._in_flight.discard(key)
        if resource_version:
            self._last[key] = resource_version
        held = self._held.pop(key, {})
        return {uid for rv, uids in held.items() if rv != resource_version for uid in uids}

    @property
    def last(self) -> Mapping[Key, str]:
        """The resourceVersion of each Secret's last own write."""
        return self._last

    def hold(self, key: Key, resource_version: str | None, uids: Iterable[str]) -> bool:
        """Keep an event of a Secret being written until the write ends (True: held)."""
        if key not in self._in_flight:
            return False
        self._held.setdefault(key, {}).setdefault(resource_version or "", set()).update(uids)
        return True

    def forget(self, key: Key) -> None:
        self._last.pop(key, None)
