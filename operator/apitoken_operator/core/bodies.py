"""From raw Kubernetes objects (Kopf bodies, API dicts) to the core's typed views. No I/O.

The handlers read objects and pass the dicts here; everything the core looks at is validated
once in this module. A spec that fails validation (the CRD schema normally prevents it) is
reported through `invalid_spec_status` instead of raising in a loop.
"""

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from apitoken_operator.core.apitoken.decide import ApiTokenView
from apitoken_operator.core.apitoken.invalid_spec import waiting_message
from apitoken_operator.core.conditions import Signal, summarize
from apitoken_operator.core.managed_secret import ObservedSecret
from apitoken_operator.core.workspace.credential import WorkspaceObject
from apitoken_operator.crd import names, reasons
from apitoken_operator.crd.resources import (
    ApiTokenSpec,
    ApiTokenStatus,
    ClusterTokenWorkspaceSpec,
    TokenWorkspaceSpec,
    TokenWorkspaceStatus,
    WorkspaceKind,
)

Raw = Mapping[str, Any]


def _meta(body: Raw) -> Mapping[str, Any]:
    meta = body.get("metadata") or {}
    return meta if isinstance(meta, Mapping) else {}


def _our_annotations(meta: Mapping[str, Any]) -> dict[str, str]:
    # Only apitoken.dev/ annotations are read: the core never sees (nor copies) others.
    annotations = meta.get("annotations") or {}
    return {str(k): str(v) for k, v in annotations.items() if str(k).startswith(names.GROUP + "/")}


def api_token_view(body: Raw) -> ApiTokenView:
    """Raises pydantic.ValidationError for a spec the models refuse."""
    meta = _meta(body)
    status = status_of(body, ApiTokenStatus)
    return ApiTokenView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=ApiTokenSpec.model_validate(body.get("spec") or {}),
        status=status,
        annotations=_our_annotations(meta),
        deleting=bool(meta.get("deletionTimestamp")),
    )


Status = TypeVar("Status", ApiTokenStatus, TokenWorkspaceStatus)


def status_of(body: Raw, model: type[Status]) -> Status:
    """The object's status; one we cannot read is rebuilt (the Secret is the source of truth)."""
    try:
        return model.model_validate(body.get("status") or {})
    except ValidationError:
        return model()


def invalid_spec_status(
    body: Raw, error: ValidationError, now: datetime, *, deletion_waits: bool = False
) -> ApiTokenStatus:
    """An ApiToken's status for a spec the models refuse (see `invalid_spec`); when its
    deletion waits for a fix, the message says so (`core.apitoken.invalid_spec`)."""
    message = waiting_message if deletion_waits else None
    return invalid_spec(body, error, now, ApiTokenStatus, message=message)


def invalid_spec(
    body: Raw,
    error: ValidationError,
    now: datetime,
    model: type[Status],
    *,
    message: Callable[[str], str] | None = None,
) -> Status:
    """Ready=False, Stalled=True, reason InvalidSpec, naming the fields (never their values):
    the same for an ApiToken and a workspace (`model` is the resource's status type)."""
    meta = _meta(body)
    status = status_of(body, model)
    fields = ", ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in error.errors())
    text = message(fields) if message is not None else f"spec is not valid: {fields}"
    signal = Signal(reasons.INVALID_SPEC, text)
    generation = int(meta.get("generation") or 0)
    conditions = summarize(
        status.conditions,
        ready=False,
        ready_signal=signal,
        reconciling=None,
        stalled=signal,
        generation=generation,
        now=now,
    )
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})


def observed_secret(body: Raw | None) -> ObservedSecret | None:
    """A Secret as the API returns it (base64 data) or None when it does not exist."""
    if body is None:
        return None
    meta = _meta(body)
    data: dict[str, str] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            data[str(key)] = ""  # not ours to read; the data hash will not match
    return ObservedSecret(
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        data=data,
        owner_uids=tuple(
            str(ref.get("uid"))
            for ref in meta.get("ownerReferences") or []
            if str(ref.get("apiVersion", "")).startswith(names.GROUP + "/")
        ),
    )


def secret_value(body: Raw | None, key: str) -> str | None:
    """One decoded value of a Secret (the import source, the bootstrap credential)."""
    secret = observed_secret(body)
    if secret is None:
        return None
    return secret.data.get(key) or None


def workspace_spec(kind: WorkspaceKind, body: Raw) -> TokenWorkspaceSpec:
    model = (
        ClusterTokenWorkspaceSpec
        if kind is WorkspaceKind.CLUSTER_TOKEN_WORKSPACE
        else TokenWorkspaceSpec
    )
    return model.model_validate(body.get("spec") or {})


def workspace_object(kind: WorkspaceKind, body: Raw) -> WorkspaceObject:
    meta = _meta(body)
    status = status_of(body, TokenWorkspaceStatus)
    namespace = meta.get("namespace")
    return WorkspaceObject(
        kind=kind,
        name=str(meta.get("name", "")),
        namespace=str(namespace) if namespace else None,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        spec=workspace_spec(kind, body),
        status=status,
    )
