"""`-o table` (aligned columns, the default on a terminal) or `-o json`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def default_format() -> str:
    return "table" if sys.stdout.isatty() else "json"


def emit(fmt: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], raw: Any) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(raw, indent=2) + "\n")
        return
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    header = [c.upper() for c in columns]
    for line in [header, *cells]:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
        sys.stdout.write("\n")
