"""The one scheduler of all ApiTokens: the pure due-time queue (clock passed in) and the
runner's pool of workers over it."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from apitoken_operator.core.apitoken.resume import resume_due
from apitoken_operator.core.due_queue import DueQueue, clamp_next_run
from apitoken_operator.execution.scheduler import Scheduler, short_error
from apitoken_operator.settings import OperatorSettings
from support.clock import T0

pytestmark = pytest.mark.unit

S = timedelta(seconds=1)


def queue() -> DueQueue[str]:
    return DueQueue(lambda key, attempt: S * 10 * attempt)


def test_earliest_first_and_only_when_due() -> None:
    q = queue()
    q.schedule("late", T0 + 30 * S)
    q.schedule("soon", T0 + 10 * S)
    q.schedule("now", T0)
    assert q.next_due() == T0
    assert q.pop_due(T0) == "now"
    assert q.pop_due(T0) is None  # "soon" is not due yet
    assert q.pop_due(T0 + 30 * S) == "soon"
    assert q.pop_due(T0 + 30 * S) == "late"
    assert q.pop_due(T0 + 60 * S) is None


def test_no_duplicate_entries_a_schedule_replaces_the_last() -> None:
    q = queue()
    for k in range(5):
        q.schedule("a", T0 + (10 - k) * S)
    q.schedule("a", T0 + 20 * S)  # later again: the last one counts
    assert len(q) == 1
    assert q.pop_due(T0 + 19 * S) is None
    assert q.pop_due(T0 + 20 * S) == "a"
    assert q.pop_due(T0 + 100 * S) is None  # the replaced entries never come out


def test_wake_makes_a_queued_key_due_now_and_ignores_unknown_ones() -> None:
    q = queue()
    q.schedule("a", T0 + 300 * S)
    assert q.wake("a", T0 + 5 * S)
    assert not q.wake("stranger", T0)
    assert "stranger" not in q
    assert q.pop_due(T0 + 5 * S) == "a"


def test_a_running_key_is_never_handed_out_twice_a_wake_reruns_it_after() -> None:
    q = queue()
    q.schedule("a", T0)
    assert q.pop_due(T0) == "a"
    assert q.is_running("a")
    q.schedule("a", T0)  # e.g. a spec update while it runs
    assert q.wake("a", T0)
    assert q.pop_due(T0) is None
    q.done("a", T0 + 300 * S, T0 + S)
    assert q.due_at("a") == T0 + S  # woken meanwhile: at once, not at its requeue time
    assert q.pop_due(T0 + S) == "a"
    q.done("a", T0 + 300 * S, T0 + 2 * S)
    assert q.due_at("a") == T0 + 300 * S


def test_per_key_backoff_grows_and_resets_on_success() -> None:
    q = queue()
    q.schedule("a", T0)
    q.schedule("b", T0)
    assert q.pop_due(T0) == "a"
    assert q.failed("a", T0) == T0 + 10 * S
    assert q.pop_due(T0) == "b"  # one key's trouble does not hold up the others
    q.done("b", T0 + 300 * S, T0)
    assert q.pop_due(T0 + 10 * S) == "a"
    assert q.failed("a", T0 + 10 * S) == T0 + 30 * S  # second failure in a row: 20 s
    assert q.failures("a") == 2
    assert q.pop_due(T0 + 30 * S) == "a"
    q.done("a", T0 + 60 * S, T0 + 30 * S)
    assert q.failures("a") == 0
    assert q.pop_due(T0 + 60 * S) == "a"
    assert q.failed("a", T0 + 60 * S) == T0 + 70 * S  # starts again at the first step


def test_removal_while_queued_or_running() -> None:
    q = queue()
    q.schedule("a", T0)
    q.schedule("b", T0)
    q.remove("a")
    assert "a" not in q
    assert q.pop_due(T0) == "b"
    q.remove("b")  # its finalizer released while the scheduler's run was in flight
    assert not q.wake("b", T0)
    q.done("b", T0 + S, T0)
    assert "b" not in q and len(q) == 0
    q.schedule("c", T0)
    assert q.pop_due(T0) == "c"
    q.remove("c")
    assert q.failed("c", T0) is None
    assert "c" not in q


def test_done_with_no_next_time_forgets_the_key() -> None:
    q = queue()
    q.schedule("gone", T0)
    assert q.pop_due(T0) == "gone"
    q.done("gone", None, T0)
    assert "gone" not in q and q.next_due() is None


def test_many_reschedules_keep_the_heap_small() -> None:
    q = queue()
    for k in range(10_000):
        q.schedule(f"t{k % 10}", T0 + k * S)
    assert len(q) == 10
    assert sum(len(heap) for heap in q._heaps) <= 2 * 10 + 64 + 1


def test_a_keys_own_next_run_goes_before_fresh_keys_due_earlier() -> None:
    """10,000 new ApiTokens queued at once do not hold back a refresh planned meanwhile."""
    q = queue()
    for k in range(3):
        q.schedule(f"new{k}", T0, fresh=True)
    q.schedule("old", T0 + 5 * S)  # a refresh its last run planned
    assert q.next_due() == T0
    assert q.pop_due(T0 + 4 * S) == "new0"  # nothing of its own due yet: fresh ones run
    assert q.pop_due(T0 + 5 * S) == "old"  # due now: before the fresh ones queued earlier
    assert q.pop_due(T0 + 5 * S) == "new1"
    q.done("new1", T0 + 6 * S, T0 + 5 * S)  # from its first run on, its own runs rank first
    assert q.pop_due(T0 + 6 * S) == "new1"
    assert q.pop_due(T0 + 6 * S) == "new2"
    assert q.pop_due(T0 + 6 * S) is None


@pytest.mark.parametrize(
    ("requeue", "expected"),
    [(None, 300), (42, 42), (-5, 0.2), (7200, 300)],
    ids=["idle-when-nothing-planned", "as-planned", "floor-when-overdue", "capped-at-idle"],
)
def test_clamp_next_run(requeue: int | None, expected: float) -> None:
    at = None if requeue is None else T0 + requeue * S
    got = clamp_next_run(at, T0, idle=300 * S, floor=timedelta(milliseconds=200))
    assert got == T0 + expected * S


def test_resume_is_spread_but_never_after_a_planned_refresh() -> None:
    window = 30 * S
    times = [resume_due(f"uid-{k}", T0, window=window, planned=()) for k in range(200)]
    assert all(T0 <= t < T0 + window for t in times)
    assert len({t.replace(microsecond=0) for t in times}) > 20  # spread, not one instant
    assert resume_due("uid-1", T0, window=window, planned=()) == times[1]  # stable
    refresh = T0 + S / 10
    assert resume_due("uid-1", T0, window=window, planned=(None, refresh)) == min(refresh, times[1])
    overdue = T0 - 60 * S
    assert resume_due("uid-1", T0, window=window, planned=(overdue,)) == overdue


def wall() -> datetime:
    return datetime.now(UTC)


async def test_runner_bounds_concurrency_and_never_overlaps_one_key() -> None:
    scheduler = Scheduler(
        workers=3, clock=wall, idle=timedelta(hours=1), backoff=lambda k, a: S / 100
    )
    active: set[str] = set()
    peak = 0
    runs: dict[str, int] = {}

    async def run(key: str) -> datetime | None:
        nonlocal peak
        assert key not in active
        active.add(key)
        peak = max(peak, len(active))
        await asyncio.sleep(0.01)
        scheduler.wake(key)  # woken while running: runs again after, never at once
        active.discard(key)
        runs[key] = runs.get(key, 0) + 1
        return None if runs[key] >= 2 else wall() + timedelta(hours=1)

    for k in range(12):
        scheduler.add(f"t{k}")
    scheduler.start(run)
    for _ in range(300):
        if len(runs) == 12 and all(n >= 2 for n in runs.values()):
            break
        await asyncio.sleep(0.01)
    await scheduler.stop()
    assert peak == 3
    assert runs == {f"t{k}": 2 for k in range(12)}
    assert len(scheduler.queue) == 0  # None: forgotten


async def test_runner_backs_off_a_failing_key_and_a_wake_runs_it_early() -> None:
    attempts: list[int] = []

    def backoff(key: str, attempt: int) -> timedelta:
        attempts.append(attempt)
        return timedelta(hours=1)

    scheduler = Scheduler(workers=2, clock=wall, idle=timedelta(hours=1), backoff=backoff)
    calls = 0

    async def run(key: str) -> datetime | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("apiserver trouble")
        return wall() + timedelta(hours=1)

    scheduler.add("a")
    scheduler.start(run)
    for _ in range(100):
        if attempts:
            break
        await asyncio.sleep(0.01)
    assert attempts == [1] and calls == 1
    assert scheduler.wake("a")
    for _ in range(100):
        if calls == 2:
            break
        await asyncio.sleep(0.01)
    await scheduler.stop()
    assert calls == 2
    assert scheduler.queue.failures("a") == 0


async def test_stop_lets_a_run_in_progress_finish() -> None:
    scheduler = Scheduler(workers=1, clock=wall, idle=timedelta(hours=1), backoff=lambda k, a: S)
    started, finished = asyncio.Event(), asyncio.Event()

    async def run(key: str) -> datetime | None:
        started.set()
        await asyncio.sleep(0.1)  # a refresh between the service's answer and the write
        finished.set()
        return None

    scheduler.add("a")
    scheduler.start(run)
    await started.wait()
    await scheduler.stop(grace=timedelta(seconds=5))
    assert finished.is_set()


def test_short_error_names_no_message() -> None:
    class Status:
        code, reason = 409, "Conflict"

    class ApiTrouble(Exception):
        status = Status()

    text = short_error(ApiTrouble("data: c2VjcmV0LXZhbHVl"))
    assert text == "ApiTrouble: 409 Conflict"
    assert short_error(RuntimeError("secret-value")) == "RuntimeError"


def test_kopf_workers_are_bounded_and_leave_soon() -> None:
    import kopf

    from apitoken_operator.handlers.registry import configure

    settings = kopf.OperatorSettings()
    configure(settings, 7)
    assert settings.queueing.worker_limit == 7
    assert settings.queueing.idle_timeout < 1
    assert OperatorSettings().kopf_workers == 64
