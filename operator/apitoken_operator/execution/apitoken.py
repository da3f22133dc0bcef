"""The ApiToken policy's actions, run by the held-token executor (`execution.held_token`).

The reconciler builds an Observation (for a provider that manages tokens it lists the tokens
tagged with the ApiToken's UID, one GET, whenever a run may create or retire tokens, on its
first run and once per sweep interval, so that tokens left by a crash or a failed retire are
swept), calls `reconcile_once` under the token's lock, writes the returned status if
it changed, posts the returned events, releases the finalizer if asked, and runs again at
`decision.requeue_at`, or at once if `decision.actions` is not empty.
"""

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from apitoken_operator.core import held_token as held
from apitoken_operator.core.apitoken.decide import (
    Action,
    Decision,
    Observation,
    Revoke,
    decide,
    failed_state,
    issued_state,
    may_write_held_values,
    refreshed_state,
    retired_state,
)
from apitoken_operator.core.apitoken.rollout import RestartWorkloads
from apitoken_operator.core.managed_secret import ObservedSecret
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.crd import reasons
from apitoken_operator.crd.names import KEY_REFRESH_TOKEN
from apitoken_operator.crd.resources import ApiTokenStatus
from apitoken_operator.execution.held_token import (
    DEFAULT_RETRY,
    Backlog,
    Clock,
    Event,
    HeldTokenRun,
    ImportReader,
    ManagementApi,
    RefreshApi,
    RevokeApi,
    SecretWriter,
    Sleep,
    WriteRetry,
    run_rounds,
)
from apitoken_operator.execution.rollout import WorkloadPatcher, restart_workloads
from apitoken_operator.providers.answers import TokenMetadata
from apitoken_operator.providers.errors import ResponseLost, ServiceError


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
    # Refresh-only mode: RFC 7009 revocation at the provider (None: never revoked).
    revoker: RevokeApi | None = None
    # spec.rolloutRestartTargets; None: restarts are not carried out (unit tests of the rest).
    workloads: WorkloadPatcher | None = None


@dataclass(frozen=True)
class Outcome:
    status_changed: bool
    decision: Decision  # the decision on the final observation: its status is the one to write
    events: tuple[Event, ...]
    finalizer_released: bool
    # The Secret as last written (None when unchanged), for the caller's cache.
    observation: Observation


def _import_token_id(digest: str) -> str:
    # Refresh-only providers give no token id; name the token after its import (not secret).
    return "import-" + digest.removeprefix("sha256:")[:12]


class _Run(HeldTokenRun[Observation, Action, Ports, TimingPolicy]):
    """The ApiToken policy's actions over the shared executor."""

    released = False

    def _status(self) -> ApiTokenStatus:
        return self.obs.token.status

    def _owner_uid(self) -> str:
        return self.obs.token.uid

    def stopped(self) -> bool:
        return self.released

    def ports_refresh(self) -> RefreshApi:
        return self.ports.token_endpoint

    def next_round(self) -> None:
        # The service's list was read before this round's changes: sweep only once.
        self.obs = dataclasses.replace(self.obs, service_tokens=None)

    def _with(self, secret: ObservedSecret | None, status: ApiTokenStatus) -> Observation:
        token = dataclasses.replace(self.obs.token, status=status)
        return dataclasses.replace(self.obs, token=token, secret=secret)

    async def write_backlog(self) -> None:
        """Write what an earlier run could not, before anything else is decided; values no
        longer wanted (the ApiToken is being deleted or disabled, the Secret is not ours) are
        dropped, and the sweep retires a token they held."""
        await self._write_pending(wanted=may_write_held_values(self.obs))

    def _management(self) -> ManagementApi:
        if self.ports.management is None:
            raise ServiceError("the workspace's management API is not available")
        return self.ports.management

    async def _issue(self, action: held.Issue) -> None:
        issued = await self._create(self._management(), action)
        manifest, status = issued_state(self.obs, issued, self.policy)
        # If the values cannot be written, the backlog keeps them; should they be dropped, the
        # token is tagged with our UID and a later run's sweep retires it.
        verb = "Generated" if action.reason == reasons.GENERATING else "Reissued"
        event = Event("Normal", verb, f"token {issued.token_id} issued ({action.reason})")
        await self._persist(manifest, status, (event,))

    async def _refresh(self, action: held.Refresh) -> None:
        result = await self._rotate()
        manifest, status = refreshed_state(self.obs, result.values, result.obtained_at, self.policy)
        await self._persist(manifest, status)
        del action  # routine: no event

    async def _import(self, action: held.Import) -> None:
        if self.ports.imports is None:
            raise ServiceError("no import source configured")
        result = await self._redeem(self.ports.imports, action.digest)
        if result is None:
            return
        issued = held.IssuedToken(
            token_id=_import_token_id(action.digest),
            values=result.values,
            refresh_token_expires_at=result.refresh_token_expires_at,
            obtained_at=result.obtained_at,
            imported_digest=action.digest,
        )
        manifest, status = issued_state(self.obs, issued, self.policy)
        event = Event("Normal", "Imported", "imported the hand-made refresh token")
        await self._persist(manifest, status, (event,))

    async def _revoke(self, action: Revoke) -> None:
        secret = self.obs.secret
        refresh_token = secret.data.get(KEY_REFRESH_TOKEN) if secret is not None else None
        if not refresh_token:
            return
        ui = "disable or delete the token in the provider's UI"
        try:
            revoked = (
                await self.ports.revoker.revoke(refresh_token) if self.ports.revoker else False
            )
        except ServiceError as exc:
            if exc.retryable:
                raise  # the provider may answer later: backoff, then again
            # A refusal will not change by asking again: say so and go on.
            self.events.append(
                Event("Warning", reasons.NOT_REVOKED, f"revocation refused ({exc.message}): {ui}")
            )
            return
        if revoked:
            message = f"refresh token revoked at the provider ({action.reason})"
            self.events.append(Event("Normal", reasons.REVOKED, message))
        else:
            message = f"the workspace has no revocation endpoint ({action.reason}): {ui}"
            self.events.append(Event("Warning", reasons.NOT_REVOKED, message))

    async def _retire(self, action: held.RetireToken) -> None:
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
        await self._retire_at(api, action)
        self._set(None, retired_state(self.obs, action.token_id))
        verb = "deleted" if action.mode is held.RetireMode.DELETE else "disabled"
        self.events.append(
            Event("Normal", verb.capitalize(), f"token {action.token_id} {verb} ({action.reason})")
        )

    def _release(self) -> None:
        self.released = True

    async def _dispatch(self, action: Action) -> None:
        # The ApiToken's own actions; the held-token core's go to the shared run.
        if isinstance(action, Revoke):
            await self._revoke(action)
        elif isinstance(action, RestartWorkloads):
            await self._restart(action)
        else:
            await super()._dispatch(action)

    async def _restart(self, action: RestartWorkloads) -> None:
        if self.ports.workloads is None:
            return
        status = self.obs.token.status
        recorded, event = await restart_workloads(
            self.ports.workloads,
            self.obs.token.namespace,
            action,
            status.rollout_restart,
            self.clock(),
        )
        self._set(None, status.model_copy(update={"rollout_restart": recorded}))
        self.events.append(event)

    def _failed_status(self, exc: ServiceError) -> ApiTokenStatus:
        return failed_state(
            self.obs,
            exc.reason,
            exc.message,
            self.clock(),
            consumed_import_digest=self.consumed,
            retry_after=exc.retry_after,
            lost_answer=isinstance(exc, ResponseLost),
        )


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
    """One ApiToken reconcile (`run_rounds`); the outcome says what to write and post."""
    run = _Run(obs, ports, policy, clock, retry, sleep, backlog)
    final = await run_rounds(run, lambda seen: decide(seen, clock(), policy), rounds)
    return Outcome(
        status_changed=final.status != obs.token.status,
        decision=final,
        events=tuple(run.events),
        finalizer_released=run.released,
        observation=run.obs,
    )


__all__ = ["Outcome", "Ports", "reconcile_once", "service_tokens"]


def service_tokens(listed: list[TokenMetadata]) -> tuple[held.ServiceToken, ...]:
    """The service's list answer in the form the core reads."""
    return tuple(held.ServiceToken(t.id, t.status, t.external_ref) for t in listed)
