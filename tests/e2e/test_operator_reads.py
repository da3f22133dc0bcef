"""What a run reads (docs/architecture.md, "What a run reads"): a routine refresh lists no
tokens at the service, and the sweep still comes, once per sweep interval, for a token tagged
with the ApiToken's UID that no Secret holds and that no run of this process could have left."""

from __future__ import annotations

import re
import time

import pytest
from lightkube import Client

from support.operator import (
    OperatorTest,
    api_token,
    eventually,
    next_refresh,
    ready_token,
    secret_data,
)

pytestmark = pytest.mark.e2e

SWEEP_INTERVAL = 40


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, str]:
    return {"APITOKEN_OPERATOR_SWEEP_INTERVAL": f"{SWEEP_INTERVAL}s"}


def _lists(op: OperatorTest) -> float:
    """The operator's list calls at the token service so far (its own metrics)."""
    line = r'^apitoken_service_request_duration_seconds_count\{[^}]*"list_tokens"[^}]*\} (\S+)$'
    found = re.findall(line, op.operator.metrics(), flags=re.MULTILINE)
    return sum(float(v) for v in found)


def test_routine_refreshes_list_nothing_and_the_sweep_comes_on_its_interval(
    kube: Client, op: OperatorTest
) -> None:
    ns = op.namespace
    uid = api_token(kube, ns).metadata.uid
    ready_token(kube, ns)
    first = secret_data(kube, ns, "tok")
    assert first is not None
    # The first run listed nothing: the ApiToken had no finalizer yet, so no run had called
    # the service for it. It started the interval; the refreshes after it list nothing.
    assert _lists(op) == 0
    routine = next_refresh(kube, ns, after=first)
    lists, since = _lists(op), time.monotonic()
    later = next_refresh(kube, ns, after=routine)
    later = next_refresh(kube, ns, after=later)
    assert time.monotonic() - since < SWEEP_INTERVAL - 5, "refreshes too slow to tell"
    assert _lists(op) == lists, "a routine refresh listed the ApiToken's tokens"

    stray = op.admin.create_tagged(uid)
    eventually(
        "the periodic sweep to delete the stray token",
        lambda: op.admin.token(stray) is None,
        timeout=SWEEP_INTERVAL + 15,
    )
    assert _lists(op) > lists
    assert f"token {stray} deleted (UnusedToken)" in op.operator.logs()
