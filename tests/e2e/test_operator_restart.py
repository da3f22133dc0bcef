"""The operator killed and started again: it resumes every ApiToken without minting a new
token (the Secret is the source of truth), refreshes what expired meanwhile, and sweeps the
token a crash in the middle of a re-issue left at the service (invariant 3, "nothing leaks"):
the re-issue is still due, so the next process's run lists before it issues."""

from __future__ import annotations

import pytest
from lightkube import Client

from support.operator import (
    OperatorTest,
    api_token,
    eventually,
    merge_patch,
    new_token_id,
    next_refresh,
    ready_token,
    secret_data,
    status_of,
)

pytestmark = pytest.mark.e2e


def test_a_crashed_operator_resumes_and_sweeps_what_a_crash_left(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    created = api_token(kube, ns)
    uid = created.metadata.uid
    tid = status_of(ready_token(kube, ns))["tokenId"]
    before = secret_data(kube, ns, "tok")
    assert before is not None
    # Killed (no cleanup at all) and started again: meanwhile the 6 s access token expires.
    op.operator.restart(crash=True)
    next_refresh(kube, ns, after=before, timeout=20)
    assert status_of(ready_token(kube, ns))["tokenId"] == tid  # resumed, nothing minted
    assert [t["id"] for t in op.admin.tokens_of(uid)] == [tid]

    # Killed in the middle of a re-issue: the request was there and the service had made the
    # new token (tagged with the UID), the process died before the Secret write.
    op.operator.process.kill()
    op.operator.process.wait(timeout=10)
    merge_patch(kube, ns, {"metadata": {"annotations": {"apitoken.dev/reissue": "crash"}}})
    stray = op.admin.create_tagged(uid)
    op.operator.start_again()
    eventually("the stray token to be deleted", lambda: op.admin.token(stray) is None)
    new = new_token_id(kube, ns, tid)
    assert new != stray
    eventually(
        "only the re-issued token left", lambda: [t["id"] for t in op.admin.tokens_of(uid)] == [new]
    )
    assert f"token {stray} deleted (UnusedToken)" in op.operator.logs()


def test_a_graceful_stop_leaves_no_task_for_kopf_to_wait_for(
    kube: Client, op: OperatorTest
) -> None:
    """SIGTERM runs the cleanup and then nothing is left running: before, Kopf's own waiter of
    the stop flag was, and Kopf waited 5 s for it before the process could release the Lease
    (5 s more without refreshes on every rollout, docs/benchmarks.md)."""
    ns = op.namespace
    api_token(kube, ns)
    ready_token(kube, ns)
    op.operator.restart(crash=False)
    logs = op.operator.logs()
    assert "Activity 'cleanup' succeeded." in logs
    assert "Hung tasks stopping is skipped: no tasks given." in logs
    assert "Hung tasks are stopped" not in logs
    ready_token(kube, ns)
