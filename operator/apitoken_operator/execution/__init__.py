"""Runs decisions through injected ports (no Kubernetes client, no Kopf)."""
