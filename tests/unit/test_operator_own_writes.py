"""The operator's own Secret writes wake nobody, whichever comes first: the watch's event or
the write's answer (`kube.own_writes`, `kube.objects.SecretApplier`)."""

import asyncio
from typing import Any

import pytest

from apitoken_operator.handlers.secret_watch import wake_now
from apitoken_operator.kube.objects import SecretApplier
from apitoken_operator.kube.own_writes import OwnWrites

KEY = ("ns", "s")


def test_the_event_of_the_write_in_flight_wakes_nobody() -> None:
    own = OwnWrites()
    own.begin(KEY)
    assert own.hold(KEY, "8", {"uid-a"})
    assert own.end(KEY, "8") == set()
    assert own.last[KEY] == "8"


def test_another_change_held_during_the_write_wakes_at_its_end() -> None:
    own = OwnWrites()
    own.begin(KEY)
    assert own.hold(KEY, "8", {"uid-a"})
    assert own.hold(KEY, "9", {"uid-a", "uid-b"})
    assert own.end(KEY, "8") == {"uid-a", "uid-b"}


def test_a_failed_write_wakes_everything_held() -> None:
    own = OwnWrites()
    own.begin(KEY)
    own.hold(KEY, "8", {"uid-a"})
    assert own.end(KEY, None) == {"uid-a"}
    assert KEY not in own.last


def test_nothing_is_held_without_a_write_in_flight() -> None:
    own = OwnWrites()
    assert not own.hold(KEY, "8", {"uid-a"})
    own.begin(KEY)
    own.end(KEY, "8")
    assert not own.hold(KEY, "9", {"uid-a"})  # after the answer: the watch decides at once
    own.forget(KEY)
    assert KEY not in own.last


class _Client:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    async def apply(self, obj: Any, **_: Any) -> Any:
        if self.fail:
            raise RuntimeError("refused")
        obj.metadata.resourceVersion = "12"
        return obj


MANIFEST = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "s", "namespace": "ns"},
    "stringData": {"k": "v"},
}


@pytest.mark.parametrize(("fail", "version"), [(False, "12"), (True, None)])
def test_the_applier_tells_begin_and_end_also_when_the_write_fails(
    fail: bool, version: str | None
) -> None:
    calls: list[tuple[Any, ...]] = []
    applier = SecretApplier(
        _Client(fail),  # type: ignore[arg-type]
        lambda ns, name, rv: calls.append(("end", ns, name, rv)),
        on_writing=lambda ns, name: calls.append(("begin", ns, name)),
    )
    if fail:
        with pytest.raises(RuntimeError):
            asyncio.run(applier.apply(dict(MANIFEST)))
    else:
        asyncio.run(applier.apply(dict(MANIFEST)))
    assert calls == [("begin", "ns", "s"), ("end", "ns", "s", version)]


def test_the_watch_holds_events_of_a_secret_being_written() -> None:
    own, owners = OwnWrites(), {KEY: "uid-a"}
    meta = {"namespace": "ns", "name": "s", "resourceVersion": "8"}
    own.begin(KEY)
    assert wake_now("MODIFIED", meta, owners, own) == set()
    assert wake_now("DELETED", meta, owners, own) == {"uid-a"}  # never held
    assert own.end(KEY, "8") == set()
    assert wake_now("MODIFIED", meta, owners, own) == set()  # late: known as its own
    assert wake_now("MODIFIED", {**meta, "resourceVersion": "9"}, owners, own) == {"uid-a"}
