"""The operator's own ApiToken watch: what each event asks of the scheduler
(`core.apitoken.events`), for the steps Kopf's create, update, resume and delete handlers
took before."""

from typing import Any

import pytest

from apitoken_operator.core.apitoken.events import Seen, Step, on_event
from apitoken_operator.crd import names

pytestmark = pytest.mark.unit


def body(
    generation: int = 1,
    *,
    status: dict[str, Any] | None = None,
    reissue: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "billing", "namespace": "apps", "uid": "u"}
    meta["generation"] = generation
    if reissue is not None:
        meta["annotations"] = {names.ANNOTATION_REISSUE: reissue, "other": "x"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T02:00:00Z"
    return {"metadata": meta, "spec": {}, "status": status or {}}


RECONCILED = {"observedGeneration": 1, "tokenId": "t"}


@pytest.mark.parametrize(
    ("event", "obj", "seen", "step"),
    [
        ("ADDED", body(), None, Step.RUN_FRESH),
        ("ADDED", body(status=RECONCILED), None, Step.RESUME),
        ("ADDED", body(status={"observedGeneration": 1}, generation=2), None, Step.RESUME),
        ("ADDED", body(status=RECONCILED, reissue="2"), None, Step.RUN_FRESH),
        (
            "ADDED",
            body(status={**RECONCILED, "lastReissueRequest": "2"}, reissue="2"),
            None,
            Step.RESUME,
        ),
        ("MODIFIED", body(status=RECONCILED), Seen(1, None), Step.NOTHING),
        ("MODIFIED", body(2, status=RECONCILED), Seen(1, None), Step.RUN_FRESH),
        ("MODIFIED", body(status=RECONCILED, reissue="1"), Seen(1, None), Step.RUN_FRESH),
        ("MODIFIED", body(status=RECONCILED, reissue="1"), Seen(1, "1"), Step.NOTHING),
        (
            "MODIFIED",
            body(status={**RECONCILED, "lastReissueRequest": "1"}, reissue="1"),
            Seen(1, None),
            Step.NOTHING,
        ),
        ("MODIFIED", body(status=RECONCILED, deleting=True), Seen(1, None), Step.RUN_DELETION),
        ("ADDED", body(status=RECONCILED, deleting=True), None, Step.RUN_DELETION),
        ("DELETED", body(status=RECONCILED, deleting=True), Seen(1, None), Step.FORGET),
    ],
    ids=[
        "new-runs-now",
        "found-at-start-up-resumes",
        "found-with-a-spec-change-resumes-soon",
        "found-with-a-reissue-request-runs-now",
        "found-with-a-handled-reissue-resumes",
        "own-status-write",
        "spec-changed",
        "reissue-requested",
        "reissue-seen-already",
        "reissue-handled-before-this-process",
        "being-deleted",
        "found-being-deleted",
        "gone",
    ],
)
def test_each_event_asks_for_one_step(
    event: str, obj: dict[str, Any], seen: Seen | None, step: Step
) -> None:
    got, remembered = on_event(event, obj, seen)
    assert got is step
    if step is Step.FORGET:
        assert remembered is None
    else:
        meta = obj["metadata"]
        reissue = (meta.get("annotations") or {}).get(names.ANNOTATION_REISSUE)
        assert remembered == Seen(meta["generation"], reissue)
