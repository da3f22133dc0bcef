"""Issue 11 item 10: kube-apiserver and etcd restarted under the running operator (same data
directory, ports and certificates), on a control plane of this module's own so the session's
cluster is not disturbed.

The operator recovers without a restart of its own: the same process (PID) is still the Lease
holder afterwards, its watches resume (an ApiToken created after the restart goes Ready), an
existing ApiToken keeps refreshing without being re-issued, and no refresh token was replayed.

The outage (stop, a pause, start, apiserver ready) lasts longer than the default renew deadline
(10 s), after which a holder exits by design (docs/usage.md, *Leader election*); this module's
operator runs with a renew deadline that tolerates it, the setting docs/usage.md recommends for
clusters whose control plane restarts take longer. `make chaos` restarts CHAOS_ROUNDS times in a
row, a new ApiToken after each (once in `make test`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from localkube import Cluster, ControlPlane
from support import chaos
from support.operator import (
    OPERATOR_NAMESPACE,
    ServiceAdmin,
    api_token,
    create_workspace,
    get_api_token,
    leaks,
    next_refresh,
    ready_token,
    secret_data,
    start_operator,
    status_of,
)
from support.tokenservice import RunningTokenService

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

DOWN_FOR_S = 3.0
# Tolerates the outage: the holder keeps its write gate open across it (see the module doc).
TOLERANT_ELECTION = {
    "APITOKEN_OPERATOR_LEADER_LEASE_DURATION": "90s",
    "APITOKEN_OPERATOR_LEADER_RENEW_DEADLINE": "60s",
    "APITOKEN_OPERATOR_LEADER_RETRY_PERIOD": "2s",
}
NAMESPACE = "chaos-apiserver-restart"


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[tuple[ControlPlane, Cluster]]:
    plane = ControlPlane()
    with plane as cluster:
        yield plane, cluster


def test_operator_rides_out_an_apiserver_and_etcd_restart(
    own_control_plane: tuple[ControlPlane, Cluster],
    e2e_service: RunningTokenService,
    service_admin: ServiceAdmin,
    tmp_path: Path,
) -> None:
    plane, cluster = own_control_plane
    kube = cluster.client()
    for ns in (OPERATOR_NAMESPACE, NAMESPACE):
        with contextlib.suppress(ApiError):
            kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    with start_operator(
        tmp_path / "operator", cluster.kubeconfig, env=TOLERANT_ELECTION
    ) as operator:
        pid = operator.process.pid
        create_workspace(
            kube,
            NAMESPACE,
            url=e2e_service.base_url,
            service_workspace=e2e_service.workspace,
            bootstrap_value=service_admin.new_bootstrap_value(f"operator-{NAMESPACE}"),
        )
        api_token(kube, NAMESPACE, "old")
        token_id = status_of(ready_token(kube, NAMESPACE, "old"))["tokenId"]

        for round_ in range(chaos.ROUNDS):
            started = time.monotonic()
            plane.restart_etcd_and_apiserver(down_for=DOWN_FOR_S)
            outage = time.monotonic() - started
            # Within the tolerant renew deadline, or the test would prove the other behaviour.
            assert DOWN_FOR_S < outage < 50, f"outage {outage:.1f} s"
            # A fresh client: the old one's pooled connections went with the apiserver.
            kube = cluster.client()

            # Watches resumed: a new ApiToken is noticed and served.
            api_token(kube, NAMESPACE, f"new{round_}")
            ready_token(kube, NAMESPACE, f"new{round_}", timeout=45)
            # The existing one keeps refreshing, not re-issued.
            before = secret_data(kube, NAMESPACE, "old") or {}
            next_refresh(kube, NAMESPACE, before, name="old", timeout=20)
            ready_token(kube, NAMESPACE, "old", timeout=20)
            assert status_of(get_api_token(kube, NAMESPACE, "old"))["tokenId"] == token_id

        assert operator.process.poll() is None, f"the operator exited:\n{operator.logs()[-2000:]}"
        assert operator.process.pid == pid
        operator.wait_ready(leading=True)  # still the holder, not a standby
        assert e2e_service.replays() == 0, "a rotated refresh token was presented again"
        found = leaks(kube, NAMESPACE, operator, e2e_service)
        assert not found, found
