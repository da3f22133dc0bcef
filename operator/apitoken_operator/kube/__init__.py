"""Kubernetes API adapters (lightkube): reads, server-side applies, status patches."""
