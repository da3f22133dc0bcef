"""The executor of held tokens: runs the actions a policy decided through injected ports.

The only place the core's plan meets I/O, shared by the ApiToken (`execution.apitoken`) and
the workspace credential (`execution.workspace`). Kubernetes is reached through the small
`SecretWriter` and `ImportReader` protocols, providers through `ManagementApi` and `RefreshApi`
(implemented in `providers`), so this package imports neither kopf nor lightkube.

Invariant 2 (one writer per token; refresh and persist are one critical section) lives here:
`TokenLocks` serialises everything done for one owner UID, and after a refresh the new values
are written to the Secret before anything else, retried from memory, never by refreshing again.
If every write attempt of a run fails, the values stay in memory (`Backlog`, kept beside the
lock) and the next run writes them before it decides anything, so the provider never sees the
old refresh token again. Only a restart of the operator loses them; then the service's grace
period for the previous refresh token lets the next run present it again and get the same new
token.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from apitoken_operator.core import held_token as held
from apitoken_operator.core.held_token import Issue, IssuedToken, RetireMode, RetireToken
from apitoken_operator.core.managed_secret import ObservedSecret, observe, salted_digest
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


class RevokeApi(Protocol):
    async def revoke(self, refresh_token: str) -> bool:
        """RFC 7009; False when there is no revocation endpoint to call."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the ApiToken (routine refreshes post none)."""

    type: str  # Normal or Warning
    reason: str
    message: str


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


A = TypeVar("A")


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


# The observation a run carries (an ApiToken's or a workspace credential's).
Obs = TypeVar("Obs", bound="HeldObservation")


class HasSecrets(Protocol):
    """What the executor needs of a policy's ports: where the managed Secret is written."""

    @property
    def secrets(self) -> SecretWriter: ...


Ports = TypeVar("Ports", bound=HasSecrets)
# The policy's settings (timing, the credential policy), passed through to its decisions.
Policy = TypeVar("Policy")


class HeldObservation(Protocol):
    """What the executor needs of either observation: the managed Secret as last seen."""

    @property
    def secret(self) -> ObservedSecret | None: ...


class HeldTokenRun(Generic[Obs, A, Ports, Policy]):
    """One run of a held token's actions: the executor both policies share.

    Values obtained from a provider are written to the Secret before anything else, retried
    from memory, and kept in the `Backlog` if every attempt fails, so they are never lost nor
    obtained twice; retirements tolerate NotFound; a provider failure is recorded through the
    policy's failed state and ends the run's actions. A policy subclass supplies how its
    observation carries the status (`_status`, `_with`) and how it issues, imports, refreshes
    and retires (`_issue`, `_import`, `_refresh`, `_retire`); `_dispatch` routes the actions.
    """

    def __init__(
        self,
        obs: Obs,
        ports: Ports,
        policy: Policy,
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
        self.secrets: SecretWriter = ports.secrets
        self.clock = clock
        self.retry = retry
        self.sleep = sleep
        self.events: list[Event] = []
        # A hand-made value the endpoint rejected (see `_redeem`).
        self.consumed: str | None = None

    # -- what a policy supplies ----------------------------------------------------------------

    def _status(self) -> Any:
        raise NotImplementedError

    def _owner_uid(self) -> str:
        """The UID of the ApiToken or workspace that holds the token."""
        raise NotImplementedError

    def _with(self, secret: ObservedSecret | None, status: Any) -> Obs:
        raise NotImplementedError

    async def _issue(self, action: Issue) -> None:
        raise NotImplementedError

    async def _import(self, action: held.Import) -> None:
        raise NotImplementedError

    async def _refresh(self, action: held.Refresh) -> None:
        raise NotImplementedError

    async def _retire(self, action: RetireToken) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """RemoveFinalizer (asked for by the ApiToken only)."""
        raise NotImplementedError

    async def write_backlog(self) -> None:
        """Write what an earlier run could not, before anything else is decided."""
        raise NotImplementedError

    def stopped(self) -> bool:
        """Whether the run ended for good (an ApiToken's finalizer was released)."""
        return False

    def next_round(self) -> None:
        """Adjust the observation between rounds (the ApiToken's sweep runs only once)."""

    def _failed_status(self, exc: ServiceError) -> Any:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def _set(self, manifest: dict[str, Any] | None, status: Any) -> None:
        secret = observe(manifest) if manifest is not None else self.obs.secret
        self.obs = self._with(secret, status)

    async def _persist(
        self,
        manifest: dict[str, Any],
        status: Any,
        events: tuple[Event, ...] = (),
        retire: tuple[str, ...] = (),
    ) -> None:
        """Write values just obtained; if every attempt fails, the backlog keeps them (with the
        tokens they replace, `retire`) for the next run instead of losing them."""
        values = Unwritten(manifest, status, events, retire)
        await self.backlog.write(self.secrets, values, self.retry, self.sleep)
        self._set(manifest, status)
        self.events.extend(events)

    async def _write_pending(self, *, wanted: bool) -> Unwritten | None:
        """Write what an earlier run could not (dropped if no longer `wanted`), before
        anything else is decided; the values written, or None."""
        written = await self.backlog.write_pending(
            self.secrets, self.retry, self.sleep, wanted=wanted
        )
        if written is not None:
            self._set(written.manifest, written.status)
            self.events.extend(written.events)
        return written

    async def _write(self, manifest: dict[str, Any]) -> None:
        """WriteSecret: data already known (metadata repair, disable, orphan)."""
        await write_secret(self.secrets, manifest, self.retry, self.sleep)
        self._set(manifest, self._status())

    @staticmethod
    async def _retire_at(api: ManagementApi, action: RetireToken) -> None:
        try:
            if action.mode is RetireMode.DELETE:
                await api.delete_token(action.token_id)
            else:
                await api.disable_token(action.token_id)
        except NotFound:
            pass  # already gone: what we wanted

    async def _create(self, api: ManagementApi, action: Issue) -> IssuedToken:
        """Issue: a new token through the management API, tagged with the owner's UID."""
        created = await api.create_token(
            name=action.token_name,
            lifetime_days=action.lifetime_days,
            external_ref=self._owner_uid(),
        )
        return IssuedToken(
            created.metadata.id, created.values, created.refresh_token_expires_at, self.clock()
        )

    async def _redeem(self, source: ImportReader, digest: str) -> RefreshResult | None:
        """Import: refresh once with the hand-made value if it is still the one decided on (its
        salted digest); None if it changed since. A value the endpoint rejects is remembered
        (`consumed`, recorded by the failed state) so it is never presented again."""
        value = await source.read()
        if value is None or salted_digest(self._owner_uid(), value) != digest:
            return None  # changed since it was observed: the next run sees the new value
        try:
            return await self.ports_refresh().refresh(value)
        except InvalidGrant:
            self.consumed = digest
            raise

    def ports_refresh(self) -> RefreshApi:
        """The token endpoint of the policy's ports."""
        raise NotImplementedError

    async def _rotate(self) -> RefreshResult:
        """Refresh: present the refresh token the Secret holds to the token endpoint."""
        secret = self.obs.secret
        refresh_token = secret.data.get(KEY_REFRESH_TOKEN) if secret is not None else None
        if not refresh_token:
            raise InvalidGrant("the Secret holds no refresh token")
        return await self.ports_refresh().refresh(refresh_token)

    async def _dispatch(self, action: A) -> None:
        """Run one action of the held-token core through the policy's ways of doing it."""
        match action:
            case Issue():
                await self._issue(action)
            case held.Import():
                await self._import(action)
            case held.Refresh():
                await self._refresh(action)
            case RetireToken():
                await self._retire(action)
            case held.WriteSecret(manifest=manifest):
                await self._write(manifest)
            case held.RemoveFinalizer():
                self._release()

    def _failed(self, exc: ServiceError) -> None:
        self._set(None, self._failed_status(exc))
        self.events.append(Event("Warning", "Failed", exc.message))

    async def run(self, actions: Sequence[A]) -> bool:
        return await run_actions(actions, self._dispatch, self._failed)


class HasActions(Protocol):
    @property
    def actions(self) -> Sequence[Any]: ...


D = TypeVar("D", bound=HasActions)


async def run_rounds(
    run: HeldTokenRun[Obs, Any, Any, Any], decide: Callable[[Obs], D], rounds: int
) -> D:
    """The reconcile loop of every held token: write the backlog left by an earlier run, then
    decide and run the actions in order, stopping at the first provider failure; repeat on the
    new observation (a re-issue or renewal is followed by retiring the old token) for at most
    `rounds` rounds. Returns the decision on the final observation: its status is the one to
    write. Kubernetes write errors after retries propagate; values obtained stay in the backlog."""
    await run.write_backlog()
    decision = decide(run.obs)
    for _ in range(rounds):
        if not decision.actions or not await run.run(decision.actions) or run.stopped():
            break
        run.next_round()
        decision = decide(run.obs)
    return decision if run.stopped() else decide(run.obs)
