"""Run a Decision's actions through injected ports: the only place the core's plan meets I/O.

The Kopf layer builds an Observation (for provider apitoken it lists the tokens tagged with the
ApiToken's UID on every run, one GET, so that tokens left by a crash or a failed retire are
swept), calls `reconcile_once` under the token's lock, writes the returned status if it changed,
posts the returned events, releases the finalizer if asked, and runs again at
`decision.requeue_at`, or at once if `decision.actions` is not empty. Kubernetes is
reached through the small `SecretWriter` and `ImportReader` protocols, the token service through
the clients in `service_client`, so this module imports neither kopf nor lightkube.

Invariant 2 (one writer per token; refresh and persist are one critical section) lives here:
`TokenLocks` serialises everything done for one ApiToken UID, and after a refresh the new values
are written to the Secret before anything else, retried from memory, never by refreshing again.
If every write attempt of a run fails, the values stay in memory (`Backlog`, kept beside the
lock) and the next run writes them before it decides anything, so the service never sees the
old refresh token again. Only a restart of the operator loses them; then the service's grace
period for the previous refresh token lets the next run present it again and get the same new
token.
"""

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from apitoken_operator.core.apitoken.decide import (
    Action,
    Decision,
    Generate,
    ImportToken,
    Observation,
    Refresh,
    Reissue,
    decide,
    failed_state,
    issued_state,
    may_write_held_values,
    refreshed_state,
    retired_state,
)
from apitoken_operator.core.held_token import (
    IssuedToken,
    RemoveFinalizer,
    RetireMode,
    RetireToken,
    ServiceToken,
    WriteSecret,
)
from apitoken_operator.core.managed_secret import observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.crd.names import KEY_REFRESH_TOKEN
from apitoken_operator.crd.resources import ApiTokenStatus, TokenWorkspaceStatus
from apitoken_operator.providers.answers import CreatedToken, RefreshResult, TokenMetadata
from apitoken_operator.providers.errors import InvalidGrant, NotFound, ServiceError


class SecretWriter(Protocol):
    async def apply(self, manifest: dict[str, Any]) -> None:
        """Create or update the Secret (server-side apply by the operator's field manager)."""


class ImportReader(Protocol):
    async def read(self) -> str | None:
        """The hand-made refresh token in spec.refreshTokenSecretRef, or None if missing."""


class ManagementApi(Protocol):
    async def create_token(
        self, *, name: str, lifetime_days: int, external_ref: str | None
    ) -> CreatedToken: ...

    async def disable_token(self, token_id: str) -> TokenMetadata: ...

    async def delete_token(self, token_id: str) -> None: ...


class RefreshApi(Protocol):
    async def refresh(self, refresh_token: str) -> RefreshResult: ...


@dataclass(frozen=True)
class Ports:
    secrets: SecretWriter
    token_endpoint: RefreshApi
    # None for refresh-only workspaces, or while the workspace's credential does not work.
    management: ManagementApi | None = None
    imports: ImportReader | None = None
    # The management API of another workspace ("Kind/name"), for tokens left in a workspace
    # the ApiToken moved away from; None when that workspace is gone or not usable.
    management_for: Callable[[str], Awaitable[ManagementApi | None]] | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the ApiToken (routine refreshes post none)."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    status_changed: bool
    decision: Decision  # the decision on the final observation: its status is the one to write
    events: tuple[Event, ...]
    finalizer_released: bool
    # The Secret as last written (None when unchanged), for the caller's cache.
    observation: Observation


@dataclass(frozen=True)
class WriteRetry:
    attempts: int = 5
    first_delay: timedelta = timedelta(milliseconds=200)


DEFAULT_RETRY = WriteRetry()
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Unwritten:
    """Values a run got from the service and could not write to the Secret, with the status
    and events that go with them."""

    manifest: dict[str, Any] = field(repr=False)
    status: ApiTokenStatus | TokenWorkspaceStatus  # the latter for a workspace's credential
    events: tuple[Event, ...] = ()
    # A workspace credential's tokens to disable once these values are written (the token a
    # renewal or a new bootstrap value replaced): never before, or the workspace would be left
    # with no working credential.
    retire_token_ids: tuple[str, ...] = ()


@dataclass
class Backlog:
    """What one ApiToken's (or workspace credential's) runs could not write yet; used only
    under its lock. Both kinds of run write through it, so values obtained from the service
    are either in the Secret or here."""

    pending: Unwritten | None = None

    async def write(
        self, secrets: SecretWriter, values: Unwritten, retry: WriteRetry, sleep: Sleep
    ) -> None:
        """Write values just obtained; if every attempt fails, keep them here and raise."""
        try:
            await write_secret(secrets, values.manifest, retry, sleep)
        except Exception:
            self.pending = values
            raise

    async def write_pending(
        self, secrets: SecretWriter, retry: WriteRetry, sleep: Sleep, *, wanted: bool
    ) -> Unwritten | None:
        """Write what an earlier run could not (drop it instead if no longer `wanted`); the
        values written, for the run to continue from, or None."""
        pending = self.pending
        if pending is None or not wanted:
            self.pending = None
            return None
        await write_secret(secrets, pending.manifest, retry, sleep)
        self.pending = None
        return pending


class TokenLocks:
    """One asyncio.Lock per ApiToken UID: handlers, timers and daemons take it for any work.
    Beside each lock, the token's `Backlog` of values not yet written."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._backlogs: dict[str, Backlog] = {}

    def for_uid(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def backlog(self, uid: str) -> Backlog:
        return self._backlogs.setdefault(uid, Backlog())

    def forget(self, uid: str) -> None:
        """After the ApiToken is gone (its finalizer released)."""
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]
            self._backlogs.pop(uid, None)


A = TypeVar("A")


async def write_secret(
    secrets: SecretWriter, manifest: dict[str, Any], retry: WriteRetry, sleep: Sleep
) -> None:
    delay = retry.first_delay.total_seconds()
    for attempt in range(1, retry.attempts + 1):
        try:
            await secrets.apply(manifest)
            return
        except Exception:
            if attempt == retry.attempts:
                raise
            await sleep(delay)
            delay *= 2


async def run_actions(
    actions: Sequence[A],
    dispatch: Callable[[A], Awaitable[None]],
    failed: Callable[[ServiceError], None],
) -> bool:
    """Run `actions` in order through `dispatch`; at the first service failure let `failed`
    record it and return False (the rest wait for the backoff). Other errors (a Secret write
    that kept failing) propagate. Shared by the ApiToken and workspace credential runs."""
    for action in actions:
        try:
            await dispatch(action)
        except ServiceError as exc:
            failed(exc)
            return False
    return True


def _import_token_id(digest: str) -> str:
    # Refresh-only providers give no token id; name the token after its import (not secret).
    return "import-" + digest.removeprefix("sha256:")[:12]


class _Run:
    def __init__(
        self,
        obs: Observation,
        ports: Ports,
        policy: TimingPolicy,
        clock: Clock,
        retry: WriteRetry,
        sleep: Sleep,
        backlog: Backlog | None = None,
    ) -> None:
        self.obs = obs
        # A run without a backlog (tests, one-off runs) keeps unwritten values in its own.
        self.backlog = backlog if backlog is not None else Backlog()
        self.ports = ports
        self.policy = policy
        self.clock = clock
        self.retry = retry
        self.sleep = sleep
        self.events: list[Event] = []
        self.released = False
        # An imported refresh token the endpoint rejected: remembered so it is not retried.
        self._fail_import: str | None = None

    def _set(self, manifest: dict[str, Any] | None, status: Any) -> None:
        token = dataclasses.replace(self.obs.token, status=status)
        secret = observe(manifest) if manifest is not None else self.obs.secret
        self.obs = dataclasses.replace(self.obs, token=token, secret=secret)

    async def _persist(
        self, manifest: dict[str, Any], status: ApiTokenStatus, events: tuple[Event, ...] = ()
    ) -> None:
        """Write values just obtained from the service; if every attempt fails, the backlog
        keeps them for the next run instead of losing them."""
        values = Unwritten(manifest, status, events)
        await self.backlog.write(self.ports.secrets, values, self.retry, self.sleep)
        self._set(manifest, status)
        self.events.extend(events)

    async def write_backlog(self) -> None:
        """Write what an earlier run could not, before anything else is decided; values no
        longer wanted (the ApiToken is being deleted or disabled, the Secret is not ours) are
        dropped, and the sweep retires a token they held."""
        wanted = may_write_held_values(self.obs)
        written = await self.backlog.write_pending(
            self.ports.secrets, self.retry, self.sleep, wanted=wanted
        )
        if written is not None:
            self._set(written.manifest, written.status)
            self.events.extend(written.events)

    def _management(self) -> ManagementApi:
        if self.ports.management is None:
            raise ServiceError("the workspace's management API is not available")
        return self.ports.management

    async def _issue(self, reason: str, event_reason: str) -> None:
        spec = self.obs.token.spec.resolve(self.obs.token.namespace, self.obs.token.name)
        created = await self._management().create_token(
            name=spec.token_name, lifetime_days=spec.lifetime_days, external_ref=self.obs.token.uid
        )
        issued = IssuedToken(
            token_id=created.metadata.id,
            values=created.values,
            refresh_token_expires_at=created.refresh_token_expires_at,
            obtained_at=self.clock(),
        )
        manifest, status = issued_state(self.obs, issued)
        # If the values cannot be written, the backlog keeps them; should they be dropped, the
        # token is tagged with our UID and a later run's sweep retires it.
        event = Event("Normal", event_reason, f"token {created.metadata.id} issued ({reason})")
        await self._persist(manifest, status, (event,))

    async def _refresh(self, action: Refresh) -> None:
        secret = self.obs.secret
        refresh_token = secret.data.get(KEY_REFRESH_TOKEN) if secret is not None else None
        if not refresh_token:
            raise InvalidGrant("the Secret holds no refresh token")
        result = await self.ports.token_endpoint.refresh(refresh_token)
        manifest, status = refreshed_state(self.obs, result.values, result.obtained_at)
        await self._persist(manifest, status)
        del action  # routine: no event

    async def _import(self, action: ImportToken) -> None:
        if self.ports.imports is None:
            raise ServiceError("no import source configured")
        value = await self.ports.imports.read()
        if value is None or salted_digest(self.obs.token.uid, value) != action.digest:
            return  # changed since it was observed: the next run sees the new value
        try:
            result = await self.ports.token_endpoint.refresh(value)
        except InvalidGrant:
            self._fail_import = action.digest
            raise
        issued = IssuedToken(
            token_id=_import_token_id(action.digest),
            values=result.values,
            refresh_token_expires_at=result.refresh_token_expires_at,
            obtained_at=result.obtained_at,
            imported_digest=action.digest,
        )
        manifest, status = issued_state(self.obs, issued)
        event = Event("Normal", "Imported", "imported the hand-made refresh token")
        await self._persist(manifest, status, (event,))

    async def _retire(self, action: RetireToken) -> None:
        if action.workspace is None:
            api = self._management()
        else:
            other = (
                await self.ports.management_for(action.workspace)
                if self.ports.management_for
                else None
            )
            if other is None:
                raise ServiceError(f"workspace {action.workspace} is not available")
            api = other
        try:
            if action.mode is RetireMode.DELETE:
                await api.delete_token(action.token_id)
            else:
                await api.disable_token(action.token_id)
        except NotFound:
            pass  # already gone: what we wanted
        self._set(None, retired_state(self.obs, action.token_id))
        verb = "deleted" if action.mode is RetireMode.DELETE else "disabled"
        self.events.append(
            Event("Normal", verb.capitalize(), f"token {action.token_id} {verb} ({action.reason})")
        )

    async def _dispatch(self, action: Action) -> None:
        match action:
            case Generate(reason=reason):
                await self._issue(reason, "Generated")
            case Reissue(reason=reason):
                await self._issue(reason, "Reissued")
            case Refresh():
                await self._refresh(action)
            case ImportToken():
                await self._import(action)
            case RetireToken():
                await self._retire(action)
            case WriteSecret(manifest=manifest):
                await write_secret(self.ports.secrets, manifest, self.retry, self.sleep)
                self._set(manifest, self.obs.token.status)
            case RemoveFinalizer():
                self.released = True

    def _failed(self, exc: ServiceError) -> None:
        status = failed_state(
            self.obs,
            exc.reason,
            exc.message,
            self.clock(),
            consumed_import_digest=self._fail_import,
        )
        self._set(None, status)
        self.events.append(Event("Warning", "Failed", exc.message))

    async def run(self, decision: Decision) -> bool:
        return await run_actions(decision.actions, self._dispatch, self._failed)


async def reconcile_once(
    obs: Observation,
    ports: Ports,
    *,
    policy: TimingPolicy,
    clock: Clock,
    retry: WriteRetry = DEFAULT_RETRY,
    sleep: Sleep = asyncio.sleep,
    rounds: int = 3,
    backlog: Backlog | None = None,
) -> Outcome:
    """Write the backlog left by an earlier run, if any; then decide and run the actions in
    order, stopping at the first service failure; repeat on the new observation (a re-issue is
    followed by retiring the old token) for at most `rounds` rounds. Kubernetes write errors
    after retries propagate (Kopf retries); values obtained in that run stay in `backlog`."""
    run = _Run(obs, ports, policy, clock, retry, sleep, backlog)
    await run.write_backlog()
    decision = decide(run.obs, clock(), policy)
    for _ in range(rounds):
        if not decision.actions or not await run.run(decision) or run.released:
            break
        # The service's list was read before this round's changes: sweep only once.
        run.obs = dataclasses.replace(run.obs, service_tokens=None)
        decision = decide(run.obs, clock(), policy)
    final = decision if run.released else decide(run.obs, clock(), policy)
    return Outcome(
        status_changed=final.status != obs.token.status,
        decision=final,
        events=tuple(run.events),
        finalizer_released=run.released,
        observation=run.obs,
    )


__all__ = [
    "Backlog",
    "Event",
    "ImportReader",
    "ManagementApi",
    "Outcome",
    "Ports",
    "RefreshApi",
    "SecretWriter",
    "TokenLocks",
    "Unwritten",
    "WriteRetry",
    "reconcile_once",
    "run_actions",
    "service_tokens",
    "write_secret",
]


def service_tokens(listed: list[TokenMetadata]) -> tuple[ServiceToken, ...]:
    """The service's list answer in the form the core reads."""
    return tuple(ServiceToken(t.id, t.status, t.external_ref) for t in listed)
