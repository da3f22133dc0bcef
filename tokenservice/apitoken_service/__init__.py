"""The OAuth 2.0 API token service: workspaces, members, tokens, and the token endpoint."""
