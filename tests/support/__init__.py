"""Test harnesses shared by the tiers: the control plane, PostgreSQL and the token service."""
