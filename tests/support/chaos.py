"""The knobs of tests/chaos: `make test` runs every chaos test short (the defaults), `make chaos`
sets them for the full run (see the Makefile and docs/benchmarks.md, *Chaos*)."""

from __future__ import annotations

import os

__all__ = ["KILLS", "ROUNDS", "SEED", "TOKENS", "TTL"]


def _knob(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


# Item 7: SIGKILLs, ApiTokens churned, the seed of operations and kill moments, and the access
# token lifetime (0: the e2e default).
KILLS = _knob("CHAOS_KILLS", 5)
TOKENS = _knob("CHAOS_TOKENS", 30)
SEED = _knob("CHAOS_SEED", 11)
TTL = _knob("CHAOS_ACCESS_TOKEN_TTL", 0)
# Items 8-10: how many lost answers, service outages, control-plane restarts in a row.
ROUNDS = _knob("CHAOS_ROUNDS", 1)
