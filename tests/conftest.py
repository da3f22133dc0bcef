"""Fixtures for every tier live in tests/support; they are registered here as plugins."""

pytest_plugins = [
    "support.controlplane",
    "support.postgres",
    "support.tokenservice",
    "support.operator",
]
