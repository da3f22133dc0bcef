"""Settings from the environment become the core's policies."""

from datetime import timedelta

import pytest

from apitoken_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def test_defaults_match_the_documented_behaviour() -> None:
    settings = OperatorSettings()
    timing = settings.timing()
    assert timing.refresh_margin == timedelta(minutes=2)
    assert (timing.backoff_base, timing.backoff_cap) == (timedelta(seconds=5), timedelta(minutes=5))
    assert settings.credential_policy().lifetime_days == 90


def test_environment_overrides_for_fast_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APITOKEN_OPERATOR_REFRESH_MARGIN", "1s")
    monkeypatch.setenv("APITOKEN_OPERATOR_BACKOFF_BASE", "500ms")
    monkeypatch.setenv("APITOKEN_OPERATOR_BACKOFF_CAP", "PT2S")  # ISO 8601 works too
    monkeypatch.setenv("APITOKEN_OPERATOR_NAMESPACE", "ops")
    monkeypatch.setenv("APITOKEN_OPERATOR_SECRET_WRITE_ATTEMPTS", "2")
    settings = OperatorSettings()
    assert settings.timing().refresh_margin == timedelta(seconds=1)
    assert settings.timing().backoff_base == timedelta(seconds=0.5)
    assert settings.timing().backoff_cap == timedelta(seconds=2)
    assert settings.credential_policy().operator_namespace == "ops"
    assert settings.write_retry().attempts == 2


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APITOKEN_OPERATOR_CREDENTIAL_LIFETIME_DAYS", "400")
    with pytest.raises(ValueError, match="credential_lifetime_days"):
        OperatorSettings()
