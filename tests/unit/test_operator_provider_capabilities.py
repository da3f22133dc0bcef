"""The provider seam: every provider kind has its capabilities, and the core reads only them."""

from pathlib import Path

import pytest

from apitoken_operator.crd.resources import Provider, TokenWorkspaceSpec
from apitoken_operator.providers.capabilities import (
    capabilities,
    capabilities_of,
    importing_providers,
)

pytestmark = pytest.mark.unit


def test_every_provider_kind_says_what_it_can_do() -> None:
    for provider in Provider:
        can = capabilities_of(provider)
        # Only a provider that manages tokens needs the operator's own credential for it.
        assert not can.needs_credential or can.manages_tokens
        # A provider that cannot make tokens gets them imported.
        assert can.manages_tokens or can.needs_import


def test_the_default_provider_is_the_token_service() -> None:
    can = capabilities(TokenWorkspaceSpec())
    assert can.manages_tokens and can.needs_credential and not can.needs_import
    assert importing_providers() == (Provider.OAUTH2,)


def test_no_decision_branches_on_a_provider_name() -> None:
    root = Path(__file__).resolve().parents[2] / "operator" / "apitoken_operator"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "is Provider." in path.read_text() or "== Provider." in path.read_text()
    ]
    assert offenders == []
