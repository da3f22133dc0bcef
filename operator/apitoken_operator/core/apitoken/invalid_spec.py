"""What a run does with an ApiToken whose spec the models refuse (pure).

The CRD's schema cannot say everything the models check, so a stored ApiToken can still fail
them. Such a spec names no workspace the run can trust, so no run calls the service for it:

- An ApiToken whose spec was never valid gets no finalizer: nothing was issued, nothing holds
  its deletion.
- One that had a valid spec first keeps the finalizer its earlier runs added. Deleted, it is
  released at once when its status records no token, or when `apitoken.dev/abandon` is set;
  otherwise its deletion waits, saying so, until the spec is fixed (then the deletion cleans
  up at the service) or abandoned.
"""

from collections.abc import Mapping
from typing import Any

from apitoken_operator.crd import names


def release_invalid(body: Mapping[str, Any]) -> bool:
    """Whether the deletion of an ApiToken with an invalid spec releases it now."""
    meta = body.get("metadata") or {}
    if (meta.get("annotations") or {}).get(names.ANNOTATION_ABANDON) == "true":
        return True
    return not (body.get("status") or {}).get("tokenId")


def waiting_message(fields: str) -> str:
    """The Ready message of an ApiToken being deleted whose spec is invalid and that holds a
    token: what is wrong and the two ways out."""
    return (
        f"spec is not valid: {fields}; the deletion waits to clean up the token at the service: "
        f'fix the spec, or set the annotation {names.ANNOTATION_ABANDON}="true" to release it '
        "without cleanup"
    )
