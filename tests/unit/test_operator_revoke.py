"""Running the ApiToken's Revoke action (refresh-only mode) through the executor: revoked, no
endpoint, a refusal that must not block the deletion, an outage that is retried with backoff."""

import dataclasses
from datetime import timedelta

import pytest

from apitoken_operator.core.apitoken.decide import (
    ApiTokenView,
    Observation,
    WorkspaceView,
    issued_state,
)
from apitoken_operator.core.held_token import IssuedToken
from apitoken_operator.core.managed_secret import observe, salted_digest
from apitoken_operator.core.schedule import TimingPolicy
from apitoken_operator.crd import reasons
from apitoken_operator.crd.resources import ApiTokenSpec, TokenWorkspaceSpec, WorkspaceKind
from apitoken_operator.execution.apitoken import Ports, reconcile_once
from apitoken_operator.providers.answers import RefreshResult, TokenValues
from apitoken_operator.providers.errors import BadRequest, ServerError, ServiceError
from support.clock import T0
from support.held_tokens import MemorySecrets

pytestmark = pytest.mark.unit

UID = "uid-revoke"
REFRESH = "rt-held-secret-value"
WS = TokenWorkspaceSpec.model_validate(
    {
        "provider": "oauth2",
        "oauth2": {"tokenEndpoint": "http://idp/t", "revocationEndpoint": "http://idp/r"},
    }
)


class Endpoint:
    def __init__(self, answer: bool | ServiceError) -> None:
        self.answer = answer
        self.revoked: list[str] = []

    async def refresh(self, refresh_token: str) -> RefreshResult:
        raise AssertionError("no refresh while deleting")

    async def revoke(self, refresh_token: str) -> bool:
        self.revoked.append(refresh_token)
        if isinstance(self.answer, ServiceError):
            raise self.answer
        return self.answer


def deleting() -> Observation:
    digest = salted_digest(UID, "hand-made")
    token = ApiTokenView(
        namespace="apps",
        name="billing",
        uid=UID,
        generation=1,
        spec=ApiTokenSpec.model_validate(
            {"workspaceRef": {"name": "idp"}, "refreshTokenSecretRef": {"name": "hand-made"}}
        ),
    )
    ws = WorkspaceView(kind=WorkspaceKind.TOKEN_WORKSPACE, name="idp", spec=WS)
    obs = Observation(token=token, secret=None, workspace=ws, import_digest=digest)
    values = TokenValues("at-value", REFRESH, "Bearer", T0 + timedelta(minutes=5))
    manifest, status = issued_state(
        obs, IssuedToken("import-1", values, None, T0, digest), TimingPolicy()
    )
    token = dataclasses.replace(token, status=status, deleting=True)
    return dataclasses.replace(obs, token=token, secret=observe(manifest))


async def run(endpoint: Endpoint) -> tuple[bool, list[tuple[str, str]]]:
    ports = Ports(secrets=MemorySecrets(), token_endpoint=endpoint, revoker=endpoint)
    outcome = await reconcile_once(
        deleting(), ports, policy=TimingPolicy(), clock=lambda: T0 + timedelta(minutes=1)
    )
    return outcome.finalizer_released, [(e.type, e.reason) for e in outcome.events]


@pytest.mark.parametrize(
    ("answer", "released", "events"),
    [
        (True, True, [("Normal", reasons.REVOKED)]),
        (False, True, [("Warning", reasons.NOT_REVOKED)]),
        (
            BadRequest("revocation http://idp/r: 400 unsupported_token_type"),
            True,
            [("Warning", reasons.NOT_REVOKED)],
        ),
        (ServerError("revocation http://idp/r: 503"), False, [("Warning", "Failed")]),
    ],
    ids=["revoked", "no-endpoint", "refused-goes-on", "outage-waits"],
)
async def test_revocation_on_deletion(
    answer: bool | ServiceError, released: bool, events: list[tuple[str, str]]
) -> None:
    endpoint = Endpoint(answer)
    got_released, got_events = await run(endpoint)
    assert endpoint.revoked == [REFRESH]  # once, with the Secret's refresh token
    assert (got_released, got_events) == (released, events)
