"""The operator killed and started again: it resumes every ApiToken without minting a new
token (the Secret is the source of truth), refreshes what expired meanwhile, and sweeps a token
tagged with the ApiToken's UID that no Secret holds (invariant 3, "nothing leaks")."""

from __future__ import annotations

import pytest
from lightkube import Client

from support.operator import (
    OperatorTest,
    api_token,
    eventually,
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
    stray = op.admin.create_tagged(uid)
    # Killed (no cleanup at all) and started again: meanwhile the 6 s access token expires.
    op.operator.restart(crash=True)
    next_refresh(kube, ns, after=before, timeout=20)
    eventually("the stray token to be deleted", lambda: op.admin.token(stray) is None)
    assert status_of(ready_token(kube, ns))["tokenId"] == tid
    assert [t["id"] for t in op.admin.tokens_of(uid)] == [tid]
    assert f"token {stray} deleted (UnusedToken)" in op.operator.logs()
