"""The workspace policy's actions, run by the held-token executor (`execution.held_token`).

The management API is built per call from the credential's current access token
(`management_with`), so a renewal switches to the new token at once. Refresh and persist are one
critical section here too: the rotated credential is written before anything else and the write
is retried from memory. Values no write attempt of a run could store stay in the workspace's
`Backlog` (beside its lock, like an ApiToken's): the next run writes them before it decides
anything, so the old refresh token is never presented again, and only then disables the token
they replaced.
"""

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from apitoken_operator.core import held_token as held
from apitoken_operator.core.managed_secret import ObservedSecret
from apitoken_operator.core.workspace.credential import (
    CredentialAction,
    CredentialDecision,
    CredentialObservation,
    CredentialPolicy,
    credential_failed_state,
    credential_stored_state,
    decide_credential,
    may_write_held_credential,
    token_claims,
)
from apitoken_operator.crd.names import KEY_ACCESS_TOKEN
from apitoken_operator.crd.resources import TokenWorkspaceStatus
from apitoken_operator.execution import held_token as executor
from apitoken_operator.providers.errors import ServiceError


@dataclass(frozen=True)
class CredentialPorts:
    secrets: executor.SecretWriter
    token_endpoint: executor.RefreshApi
    bootstrap: executor.ImportReader
    # The workspace's management API authenticated with the given access token.
    management_with: Callable[[str], executor.ManagementApi]


@dataclass(frozen=True)
class CredentialOutcome:
    status_changed: bool
    decision: CredentialDecision
    events: tuple[executor.Event, ...]
    observation: CredentialObservation


class _Run(
    executor.HeldTokenRun[
        CredentialObservation, CredentialAction, CredentialPorts, CredentialPolicy
    ]
):
    """The workspace policy's actions (the operator's own credential) over the shared
    executor."""

    def ports_refresh(self) -> executor.RefreshApi:
        return self.ports.token_endpoint

    def _status(self) -> TokenWorkspaceStatus:
        return self.obs.workspace.status

    def _owner_uid(self) -> str:
        return self.obs.workspace.uid

    def _with(
        self, secret: ObservedSecret | None, status: TokenWorkspaceStatus
    ) -> CredentialObservation:
        ws = dataclasses.replace(self.obs.workspace, status=status)
        return dataclasses.replace(self.obs, workspace=ws, secret=secret)

    def _api(self) -> executor.ManagementApi:
        secret = self.obs.secret
        bearer = secret.data.get(KEY_ACCESS_TOKEN) if secret is not None else None
        if not bearer:
            raise ServiceError("the operator holds no access token for this workspace")
        return self.ports.management_with(bearer)

    async def _store(
        self,
        issued: held.IssuedToken,
        digest: str | None = None,
        events: tuple[executor.Event, ...] = (),
        retire: tuple[str, ...] = (),
    ) -> None:
        """Write a credential just obtained (the backlog keeps it, with the tokens it replaces,
        should every attempt fail)."""
        manifest, status = credential_stored_state(
            self.obs, issued, self.policy, bootstrap_digest=digest
        )
        await self._persist(manifest, status, events, retire)

    async def write_backlog(self) -> None:
        """Write what an earlier run could not, before anything else is decided (never over a
        Secret that is not this workspace's credential), then disable the tokens it replaced."""
        written = await self._write_pending(wanted=may_write_held_credential(self.obs))
        if written is None:
            return
        replaced = [
            held.RetireToken(token_id, held.RetireMode.DISABLE, "CredentialReplaced")
            for token_id in written.retire_token_ids
        ]
        await self.run(replaced)

    async def _import(self, action: held.Import) -> None:
        result = await self._redeem(self.ports.bootstrap, action.digest)
        if result is None:
            return
        user, tid = token_claims(result.values.access_token)
        token_id = tid or "bootstrap-" + action.digest.removeprefix("sha256:")[:12]
        expires = result.refresh_token_expires_at
        old = action.retire_token_id
        retire = (old,) if old and old != token_id else ()
        event = executor.Event(
            "Normal", "Bootstrapped", f"acting as {user or 'the bootstrap member'}"
        )
        issued = held.IssuedToken(token_id, result.values, expires, result.obtained_at)
        await self._store(issued, action.digest, (event,), retire)
        for replaced in retire:
            await self._retire(
                held.RetireToken(replaced, held.RetireMode.DISABLE, "CredentialReplaced")
            )

    async def _refresh(self, action: held.Refresh) -> None:
        result = await self._rotate()
        secret = self.obs.secret
        held_expiry = secret.refresh_token_expires_at if secret is not None else None
        expires = held_expiry or result.refresh_token_expires_at
        await self._store(
            held.IssuedToken(action.token_id, result.values, expires, result.obtained_at)
        )

    async def _issue(self, action: held.Issue) -> None:
        issued = await self._create(self._api(), action)
        event = executor.Event(
            "Normal", "CredentialRenewed", f"the operator's token is now {issued.token_id}"
        )
        # The RetireToken that follows in the decision disables the old token; should the write
        # fail, the backlog carries that retirement to the run that writes the new one.
        old = self.obs.secret.token_id if self.obs.secret is not None else None
        await self._store(issued, events=(event,), retire=(old,) if old else ())

    async def _retire(self, action: held.RetireToken) -> None:
        await self._retire_at(self._api(), action)  # the current (new) credential

    def _failed_status(self, exc: ServiceError) -> TokenWorkspaceStatus:
        return credential_failed_state(
            self.obs, exc.reason, exc.message, self.clock(), consumed_bootstrap_digest=self.consumed
        )


async def reconcile_credential_once(
    obs: CredentialObservation,
    ports: CredentialPorts,
    *,
    policy: CredentialPolicy,
    clock: executor.Clock,
    retry: executor.WriteRetry = executor.DEFAULT_RETRY,
    sleep: executor.Sleep = asyncio.sleep,
    rounds: int = 3,
    backlog: executor.Backlog | None = None,
) -> CredentialOutcome:
    """Write the backlog left by an earlier run, if any; then decide and run, for at most
    `rounds` rounds, then decide on the result: its status is the one to write, `usable` says
    whether ApiTokens can use the management API now. Kubernetes write errors after retries
    propagate; a credential obtained in that run stays in `backlog`."""
    run = _Run(obs, ports, policy, clock, retry, sleep, backlog)
    final = await executor.run_rounds(
        run, lambda seen: decide_credential(seen, clock(), policy), rounds
    )
    return CredentialOutcome(
        status_changed=final.status != obs.workspace.status,
        decision=final,
        events=tuple(run.events),
        observation=run.obs,
    )
