"""What one operator process shares between handlers, the scheduler, daemons and the Secret watch.

Built once at start-up from the settings (no module-level singletons) and closed at shutdown.
"""

import asyncio
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from lightkube import AsyncClient, KubeConfig

from apitoken_operator.core.backoff import backoff_delay
from apitoken_operator.core.schedule import TimingPolicy, stable_fraction
from apitoken_operator.core.workspace.credential import CredentialPolicy
from apitoken_operator.execution.held_token import TokenLocks, WriteRetry
from apitoken_operator.execution.scheduler import Scheduler
from apitoken_operator.kube.events import EventPoster
from apitoken_operator.kube.known_bodies import KnownBodies
from apitoken_operator.kube.namespace_cache import NamespaceCache
from apitoken_operator.kube.objects import Body, SecretApplier, resource_version
from apitoken_operator.kube.own_writes import OwnWrites
from apitoken_operator.kube.resources import FIELD_MANAGER
from apitoken_operator.metrics import Metrics
from apitoken_operator.providers.discovery import Discovery
from apitoken_operator.providers.http import BoundedTransport, ssl_context, utc_now
from apitoken_operator.settings import OperatorSettings

# Concurrent requests (and kept connections) per token-service connection pool.
SERVICE_CONNECTIONS = 32
# Kept service connections are closed after this long idle: under the servers' usual 5 s.
KEEPALIVE_EXPIRY_S = 2.0


@dataclass(frozen=True)
class LaunchConfig:
    """What the command line decided, handed to the start-up handler through Kopf's memo."""

    settings: OperatorSettings = field(default_factory=OperatorSettings)
    # Namespaces served; empty: all of them.
    namespaces: Sequence[str] = ()
    metrics_port: int | None = None
    # The write gate of leader election (raises when this process may not write); the
    # default lets a --standalone process always write.
    gate: Callable[[], None] = field(default=lambda: None)
    # Who this process is: the Lease's holder identity, and the events' reportingInstance.
    identity: str = field(default_factory=socket.gethostname)


class Runtime:
    def __init__(self, config: LaunchConfig, kube: AsyncClient, metrics: Metrics) -> None:
        self.config = config
        self.settings = config.settings
        self.kube = kube
        self.metrics = metrics
        self.timing: TimingPolicy = config.settings.timing()
        self.credential_policy: CredentialPolicy = config.settings.credential_policy()
        self.write_retry: WriteRetry = config.settings.write_retry()
        # Checked before every provider call and Secret write (`kube.lease.LeaseElector`).
        self.check_writes: Callable[[], None] = config.gate
        self.locks = TokenLocks()
        self.workspace_locks = TokenLocks()
        # Workspace daemons sleep on these until their next scheduled run or an early wake-up.
        self.wakers: dict[str, asyncio.Event] = {}
        # Every ApiToken's runs: one due-time queue and a fixed pool of workers (the watches
        # only add and wake; `handlers.registry` starts and stops it).
        self.scheduler = Scheduler(
            workers=config.settings.token_workers,
            clock=self.clock,
            idle=self.timing.recheck_interval,
            backoff=self._token_backoff,
        )
        # Events about ApiTokens and workspaces, posted by a task of their own.
        self.events = EventPoster(kube, instance=config.identity)
        # ApiToken uid -> (namespace, name), for the scheduler's runs.
        self.token_refs: dict[str, tuple[str, str]] = {}
        # (namespace, Secret name) -> uid of the ApiToken that writes it (for the Secret watch).
        self.secret_owners: dict[tuple[str, str], str] = {}
        # The operator's own Secret writes, told from others' changes by the Secret watch.
        self.own_writes = OwnWrites()
        # ApiToken uid -> "Kind/namespace/name" of its workspace; workspace key -> usable.
        self.token_workspaces: dict[str, str] = {}
        self.workspace_usable: dict[str, bool] = {}
        # Workspace key -> (its last run's answer, until when ApiToken runs may reuse it);
        # kept by `reconcilers.workspace`.
        self.workspace_runs: dict[str, tuple[Any, datetime]] = {}
        # Namespaces' labels and deletion state, from a watch per served scope.
        self.namespaces = NamespaceCache(kube, config.namespaces)
        # ApiToken uid -> when this process last listed its tokens at the service (the sweep);
        # kept by `reconcilers.apitoken`, which lists only when a run needs it.
        self.swept: dict[str, datetime] = {}
        # ApiToken uid -> its newest body seen, for scheduled runs (forgotten on a wake-up).
        self.token_bodies = KnownBodies()
        # ApiToken uid -> the managed Secret its last run read or wrote (same rules).
        self.secret_bodies = KnownBodies()
        # ApiToken uid -> the refresh its Secret plans, from the Secret watch's first listing,
        # until the ApiToken watch's first sight of it takes it (`core.apitoken.resume`).
        self.listed_plans: dict[str, datetime] = {}
        self._http: dict[str | None, httpx.AsyncClient] = {}
        # Authorization server metadata of oauth2 workspaces that name an issuer.
        self.discovery = Discovery(clock=self.clock)

    @classmethod
    def create(cls, config: LaunchConfig) -> "Runtime":
        kube = AsyncClient(KubeConfig.from_env(), field_manager=FIELD_MANAGER)
        return cls(config, kube, Metrics())

    def clock(self) -> datetime:
        return utc_now()

    def http_for(self, ca_bundle: str | None) -> httpx.AsyncClient:
        """One connection pool per trust setting (a workspace's caBundle)."""
        client = self._http.get(ca_bundle)
        if client is None:
            seconds = self.settings.http_timeout.total_seconds()
            # Waiting for a free connection is no failure of the service: a thousand ApiTokens
            # applied at once queue for the pool instead of failing with PoolTimeout (seen in
            # make bench-operator once runs no longer queued behind the workspace lock).
            timeout = httpx.Timeout(seconds, pool=None)
            # And they queue outside httpcore's pool (`BoundedTransport`), on kept connections.
            slots = SERVICE_CONNECTIONS
            # A kept connection idle as long as the server's keep-alive timeout may be closed
            # by the server just as a request goes out on it, which then fails before any
            # answer. httpx keeps one 5 s, as long as uvicorn and Node keep theirs: at 10,000
            # ApiTokens that failed 2 refreshes in 15 min (docs/benchmarks.md, run N).
            limits = httpx.Limits(
                max_connections=slots,
                max_keepalive_connections=slots,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            )
            transport = httpx.AsyncHTTPTransport(verify=ssl_context(ca_bundle), limits=limits)
            client = httpx.AsyncClient(
                transport=BoundedTransport(transport, slots), timeout=timeout
            )
            self._http[ca_bundle] = client
        return client

    def _token_backoff(self, uid: str, attempt: int) -> timedelta:
        jitter = stable_fraction(uid, str(attempt))
        t = self.timing
        return backoff_delay(attempt, base=t.backoff_base, cap=t.backoff_cap, jitter=jitter)

    def wake(self, uid: str | None) -> None:
        """Run a workspace's daemon or an ApiToken now (the Secret watch, a handler)."""
        if not uid:
            return
        self.token_bodies.invalidate(uid)
        self.secret_bodies.invalidate(uid)
        if uid in self.wakers:
            self.wakers[uid].set()
        self.scheduler.wake(uid)

    def plan_first_run(self, uid: str, at: datetime, ref: tuple[str, str]) -> None:
        """A managed Secret listed before this process ran its ApiToken `ref` (namespace,
        name) plans a refresh at `at`: the first run is queued for then, whenever the ApiToken
        watch's listing gets to the ApiToken; `listed_plans` tells that listing
        (`handlers.apitoken_watch.resume`)."""
        if uid not in self.token_refs:
            self.token_refs[uid] = ref
            self.listed_plans[uid] = at  # for the resume handler, still to come
        self.scheduler.add(uid, at)  # a key queued sooner keeps its time

    def writing(self, namespace: str, name: str) -> None:
        self.own_writes.begin((namespace, name))

    def note_written(self, namespace: str, name: str, resource_version: str | None) -> None:
        """A write of this process ended (None: it failed): the watch's events of that Secret
        held meanwhile that were not this write wake their ApiTokens now."""
        for uid in self.own_writes.end((namespace, name), resource_version):
            self.wake(uid)

    def secret_applier(self, secret_body: Body | None) -> SecretApplier:
        """Writes of one run: fenced by the resourceVersion the run read, behind the write gate."""
        return SecretApplier(
            self.kube,
            self.note_written,
            on_writing=self.writing,
            expected_version=resource_version(secret_body),
            gate=self.check_writes,
        )

    async def aclose(self) -> None:
        await self.namespaces.aclose()
        for client in self._http.values():
            await client.aclose()
        self._http.clear()
        await self.kube.close()
