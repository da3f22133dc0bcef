"""The ApiToken policy over the held-token core."""
