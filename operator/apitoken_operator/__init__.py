"""Kopf operator that turns ApiToken resources into Secrets holding fresh OAuth 2.0 tokens."""
