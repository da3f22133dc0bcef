"""Domain rules: tokens, members, the refresh grant; no HTTP, no SQL."""
