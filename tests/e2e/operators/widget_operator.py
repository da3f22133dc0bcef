"""A minimal Kopf operator for the control-plane smoke test."""

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's own state under our group, as the real operator does.
    settings.persistence.finalizer = "smoke.apitoken.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="smoke.apitoken.dev"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="smoke.apitoken.dev"
    )


@kopf.on.create("smoke.apitoken.dev", "v1", "widgets")
def created(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["seen"] = f"size={spec['size']}"


@kopf.on.delete("smoke.apitoken.dev", "v1", "widgets")
def deleted(**_: Any) -> None:
    pass
