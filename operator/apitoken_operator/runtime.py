"""What one operator process shares between handlers, daemons and the Secret watch.

Built once at start-up from the settings (no module-level singletons) and closed at shutdown.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from lightkube import AsyncClient, KubeConfig

from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.core.workspace.credential import CredentialPolicy
from apitoken_operator.execution.held_token import TokenLocks, WriteRetry
from apitoken_operator.kube.resources import FIELD_MANAGER
from apitoken_operator.metrics import Metrics
from apitoken_operator.providers.discovery import Discovery
from apitoken_operator.providers.http import ssl_context, utc_now
from apitoken_operator.settings import OperatorSettings


@dataclass(frozen=True)
class LaunchConfig:
    """What the command line decided, handed to the start-up handler through Kopf's memo."""

    settings: OperatorSettings = field(default_factory=OperatorSettings)
    # Namespaces served; empty: all of them.
    namespaces: Sequence[str] = ()
    metrics_port: int | None = None


class Runtime:
    def __init__(self, config: LaunchConfig, kube: AsyncClient, metrics: Metrics) -> None:
        self.config = config
        self.settings = config.settings
        self.kube = kube
        self.metrics = metrics
        self.timing: TimingPolicy = config.settings.timing()
        self.credential_policy: CredentialPolicy = config.settings.credential_policy()
        self.write_retry: WriteRetry = config.settings.write_retry()
        self.locks = TokenLocks()
        self.workspace_locks = TokenLocks()
        # Daemons sleep on these until their next scheduled run or an early wake-up.
        self.wakers: dict[str, asyncio.Event] = {}
        # (namespace, Secret name) -> uid of the ApiToken that writes it (for the Secret watch).
        self.secret_owners: dict[tuple[str, str], str] = {}
        # (namespace, Secret name) -> resourceVersion of the operator's own last write.
        self.written: dict[tuple[str, str], str] = {}
        # ApiToken uid -> "Kind/namespace/name" of its workspace; workspace key -> usable.
        self.token_workspaces: dict[str, str] = {}
        self.workspace_usable: dict[str, bool] = {}
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
            timeout = self.settings.http_timeout.total_seconds()
            client = httpx.AsyncClient(verify=ssl_context(ca_bundle), timeout=timeout)
            self._http[ca_bundle] = client
        return client

    def wake(self, uid: str | None) -> None:
        if uid and uid in self.wakers:
            self.wakers[uid].set()

    def note_written(self, namespace: str, name: str, resource_version: str) -> None:
        self.written[(namespace, name)] = resource_version

    async def aclose(self) -> None:
        for client in self._http.values():
            await client.aclose()
        self._http.clear()
        await self.kube.close()
