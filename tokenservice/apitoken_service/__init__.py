"""The OAuth 2.0 API token service: workspaces, members, tokens, and the token endpoint."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("apitoken-operator")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
