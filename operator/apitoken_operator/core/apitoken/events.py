"""What one watch event of an ApiToken asks of the scheduler (pure, no I/O).

For the operator's own ApiToken watch (instead of Kopf's create, update, resume and delete
handlers, whose per-object processing and two PATCHes per ApiToken bound the convergence at
10,000: docs/benchmarks.md). The watch keeps, per ApiToken UID, what it last saw
that matters (`Seen`); each event gives the step to take and the new `Seen`:

- gone (DELETED): forget it;
- being deleted: run its deletion now (the run keeps the finalizer until the core releases it
  and requeues itself meanwhile);
- first seen by this process: a new ApiToken (never reconciled, no `observedGeneration`) or
  one with a re-issue request not yet handled runs now as a fresh key; one found at start-up
  runs at the resume rule (`core.apitoken.resume`);
- a new generation (a spec change) or a re-issue request not yet handled: run now, fresh;
- anything else (the operator's own status writes, labels, other annotations): nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from apitoken_operator.crd import names


class Step(Enum):
    NOTHING = "nothing"
    RUN_FRESH = "run-fresh"
    RESUME = "resume"
    RUN_DELETION = "run-deletion"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the watch last saw of one ApiToken: a change of either asks for a run (slots: one
    is kept per ApiToken)."""

    generation: int
    reissue: str | None


def _seen(meta: Mapping[str, Any]) -> Seen:
    annotations = meta.get("annotations") or {}
    value = annotations.get(names.ANNOTATION_REISSUE)
    return Seen(int(meta.get("generation") or 0), str(value) if value else None)


def on_event(
    event_type: str, body: Mapping[str, Any], seen: Seen | None
) -> tuple[Step, Seen | None]:
    """The step one event of an ApiToken asks for, and what to remember of it (None: forget).
    `seen` is what the watch remembered of this UID (None: first sight in this process)."""
    if event_type == "DELETED":
        return Step.FORGET, None
    meta: Mapping[str, Any] = body.get("metadata") or {}
    status: Mapping[str, Any] = body.get("status") or {}
    now_seen = _seen(meta)
    if meta.get("deletionTimestamp"):
        return Step.RUN_DELETION, now_seen
    if seen is None:
        reconciled = status.get("observedGeneration") is not None
        fresh = not reconciled or reissue_pending(now_seen, status)
        return (Step.RUN_FRESH if fresh else Step.RESUME), now_seen
    if now_seen.generation != seen.generation:
        return Step.RUN_FRESH, now_seen
    if now_seen.reissue != seen.reissue and reissue_pending(now_seen, status):
        return Step.RUN_FRESH, now_seen
    return Step.NOTHING, now_seen


def reissue_pending(seen: Seen, status: Mapping[str, Any]) -> bool:
    """A re-issue annotation whose value no run handled yet (`status.lastReissueRequest`)."""
    return seen.reissue is not None and seen.reissue != status.get("lastReissueRequest")
