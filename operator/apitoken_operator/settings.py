"""Operator settings from the environment (APITOKEN_OPERATOR_*), turned into the policies the
pure core takes. No module-level instance: the CLI builds one and passes it down."""

from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from apitoken_operator.core.leader import LeaseTiming
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import CredentialPolicy
from apitoken_operator.crd.durations import parse_duration
from apitoken_operator.execution.held_token import WriteRetry


def _duration(value: Any) -> Any:
    """Go durations ("2m", "500ms", "1h30m") as in the CRDs; other forms go to pydantic."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APITOKEN_OPERATOR_", frozen=True)

    # Refresh timing (tests shrink these to work with access tokens living seconds).
    refresh_jitter_percent: float = Field(default=20.0, ge=0, lt=100)
    refresh_margin: Duration = timedelta(minutes=2)
    backoff_base: Duration = timedelta(seconds=5)
    backoff_cap: Duration = timedelta(minutes=5)
    recheck_interval: Duration = timedelta(minutes=5)
    # How often an ApiToken's tokens are listed at the service to sweep leftovers when no run
    # needed the list meanwhile (a first run, a spec change, an issue or any failure does).
    sweep_interval: Duration = timedelta(hours=1)
    # Retries of a Secret write holding values only in memory.
    secret_write_attempts: int = Field(default=5, ge=1)
    secret_write_first_delay: Duration = timedelta(milliseconds=200)
    # The operator's own workspace credentials.
    credential_lifetime_days: int = Field(default=90, ge=1, le=365)
    # Unset: renew a third of the lifetime before expiry (tests set seconds short of a day).
    credential_renew_before: Duration | None = None
    # Where ClusterTokenWorkspace credentials live; the Helm chart sets the release namespace.
    namespace: str = "apitoken-operator"
    # ApiToken runs in flight at most (the scheduler's workers; also --token-workers), and
    # the window over which the ApiTokens found at start-up are first run.
    token_workers: int = Field(default=12, ge=1, le=256)
    resume_spread: Duration = timedelta(seconds=30)
    # Refreshes the first listing of Secrets finds due within this window from its start
    # (those due while no process led, and during the listing) run spread evenly up to its end.
    catch_up_spread: Duration = timedelta(seconds=60)
    # Kopf's own per-object workers in flight at most (workspace handlers, annotation patches).
    kopf_workers: int = Field(default=64, ge=1)
    # How often freed memory is handed back to the system (`memory`); 0 turns it off.
    memory_trim_interval: Duration = timedelta(seconds=60)
    # Token-service HTTP calls.
    http_timeout: Duration = timedelta(seconds=10)
    # Leader election (off with --standalone): the Lease `leader_lease_name` in `namespace`.
    # The identity is the Pod's name (POD_ID, set by the chart), so a restarted container
    # takes its own Lease back at once; without POD_ID the host name and a random suffix.
    leader_lease_name: str = Field(default="apitoken-operator", min_length=1)
    leader_lease_duration: Duration = timedelta(seconds=15)
    leader_renew_deadline: Duration = timedelta(seconds=10)
    leader_retry_period: Duration = timedelta(seconds=2)

    def timing(self) -> TimingPolicy:
        return TimingPolicy(
            refresh_jitter_percent=self.refresh_jitter_percent,
            refresh_margin=self.refresh_margin,
            backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap,
            recheck_interval=self.recheck_interval,
        )

    def credential_policy(self) -> CredentialPolicy:
        return CredentialPolicy(
            lifetime_days=self.credential_lifetime_days,
            renew_before=self.credential_renew_before,
            operator_namespace=self.namespace,
            timing=self.timing(),
        )

    def lease_timing(self) -> LeaseTiming:
        return LeaseTiming(
            duration=self.leader_lease_duration,
            renew_deadline=self.leader_renew_deadline,
            retry_period=self.leader_retry_period,
        )

    def write_retry(self) -> WriteRetry:
        return WriteRetry(
            attempts=self.secret_write_attempts, first_delay=self.secret_write_first_delay
        )
