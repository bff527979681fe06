"""Human-friendly durations such as ``90s``, ``15m``, ``1h``, ``1d`` or ``2w``."""

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+)\s*(s|m|h|d|w)\s*", re.IGNORECASE | re.ASCII)


def parse_duration(text: str) -> timedelta:
    """Parse ``<integer><unit>`` with unit one of s, m, h, d, w; raise ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h, 1d or 2w")
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any duration can be") from None


def format_duration(value: timedelta) -> str:
    """The shortest ``<integer><unit>`` spelling of a whole number of seconds."""
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
