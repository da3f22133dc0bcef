"""What a workspace's provider can do: the one place the core and the reconcilers ask.

The decisions read these flags, never the provider's name, so a new provider kind is a row
here, a client module beside this one, its CRD fields, its tests and docs
(`docs/architecture.md`, "Adding a provider").
"""

from dataclasses import dataclass

from apitoken_operator.crd.resources import Provider, TokenWorkspaceSpec


@dataclass(frozen=True)
class Capabilities:
    # A management API: the operator generates, re-issues, disables, deletes and lists tokens
    # (tagged with the ApiToken's UID). Without one, tokens are made by a person in the
    # provider's UI and the operator only keeps them fresh.
    manages_tokens: bool
    # The management API is called with the operator's own credential in the workspace
    # (bootstrapped from spec.credentialsSecretRef, refreshed and renewed by the operator).
    needs_credential: bool
    # An ApiToken starts from a hand-made refresh token (spec.refreshTokenSecretRef), imported
    # once by digest.
    needs_import: bool


_CAPABILITIES: dict[Provider, Capabilities] = {
    Provider.APITOKEN: Capabilities(manages_tokens=True, needs_credential=True, needs_import=False),
    Provider.OAUTH2: Capabilities(manages_tokens=False, needs_credential=False, needs_import=True),
}


def capabilities_of(provider: Provider) -> Capabilities:
    return _CAPABILITIES[provider]


def capabilities(spec: TokenWorkspaceSpec) -> Capabilities:
    """What the provider of the workspace with this spec can do."""
    return _CAPABILITIES[spec.resolved_provider]


def importing_providers() -> tuple[Provider, ...]:
    """The provider kinds whose ApiTokens import a hand-made refresh token (for messages)."""
    return tuple(p for p, c in _CAPABILITIES.items() if c.needs_import)


__all__ = ["Capabilities", "capabilities", "capabilities_of", "importing_providers"]
