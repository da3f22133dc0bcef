"""Go-style durations ("720h", "36h30m", "1.5h", "90s"), the format the CRDs use.

The CRD pattern and Kubernetes CEL's duration() accept the same strings, so a value that passed
admission always parses here.
"""

import re
from datetime import timedelta

_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1)}
_UNITS["h"] = timedelta(hours=1)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration made of h, m, s and ms parts; raise ValueError otherwise."""
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"not a duration like 720h or 36h30m: {text!r}")
    total = timedelta()
    for number, unit in _PART.findall(text):
        total += _UNITS[unit] * float(number)
    return total
