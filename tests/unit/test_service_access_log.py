"""The token service's access log: successful grants sampled, everything else logged."""

from __future__ import annotations

import logging

import pytest

from apitoken_service.api.middleware import RequestRecorder
from apitoken_service.api.routes_oauth import TOKEN_PATH
from apitoken_service.metrics import Metrics

pytestmark = pytest.mark.unit


def test_successful_grants_are_sampled_and_everything_else_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="apitoken_service.access")
    metrics = Metrics()
    recorder = RequestRecorder(metrics, True, token_grant_log_every=3)

    for _ in range(4):
        recorder.record(TOKEN_PATH, "POST", 200, 0.001)
    for _ in range(2):
        recorder.record(TOKEN_PATH, "POST", 400, 0.001)
        recorder.record("/healthz", "GET", 200, 0.001)

    lines = [vars(r) for r in caplog.records if r.name == "apitoken_service.access"]
    grants = [line for line in lines if line["route"] == TOKEN_PATH and line["status"] == 200]
    assert len(grants) == 2  # the 1st and the 4th
    assert all(line["sampledOneIn"] == 3 for line in grants)
    failures = [line for line in lines if line["route"] == TOKEN_PATH and line["status"] == 400]
    assert len(failures) == 2 and all("sampledOneIn" not in line for line in failures)
    assert len([line for line in lines if line["route"] == "/healthz"]) == 2
    # The metrics count every request, logged or not.
    labels = {"route": TOKEN_PATH, "method": "POST", "status": "200"}
    assert metrics.registry.get_sample_value("apitoken_service_http_requests_total", labels) == 4


def test_every_grant_is_logged_when_sampling_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="apitoken_service.access")
    recorder = RequestRecorder(Metrics(), True, token_grant_log_every=1)

    for _ in range(3):
        recorder.record(TOKEN_PATH, "POST", 200, 0.001)

    assert len([r for r in caplog.records if r.name == "apitoken_service.access"]) == 3
