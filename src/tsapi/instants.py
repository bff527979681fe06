"""The ``from`` and ``to`` of a query: an RFC 3339 instant, or one relative to the database's now().

Relative instants are resolved against the database's clock, not tsapi's, because readings sent
without a ``ts`` are stamped with the database's now(): ``from=-1m`` then includes a reading
posted a second ago even when the two machines' clocks disagree.
"""

import re
from datetime import UTC, datetime, timedelta

from tsapi.durations import parse_duration
from tsapi.errors import ApiError

# An absolute instant, or an offset from now.
Instant = datetime | timedelta

# An unescaped "+01:00" in a query string arrives as " 01:00", and "now+1h" as "now 1h".
_SPACED_OFFSET = re.compile(r" (\d\d:?\d\d)$")
_RELATIVE = re.compile(r"(now)?(?:([-+ ])(\w+))?", re.IGNORECASE)
FORMS = "an RFC 3339 timestamp, or relative to now: now, -15m, now-2h, +1d (units s, m, h, d, w)"


def parse_instant(name: str, raw: str | None) -> Instant | None:
    """Parse one time parameter; a bad one is a 400 that names it."""
    if raw is None:
        return None
    relative = _RELATIVE.fullmatch(raw)
    if relative is not None and (relative.group(1) or relative.group(2)):
        _now, sign, amount = relative.groups()
        if amount is None:
            return timedelta(0)
        try:
            offset = parse_duration(amount)
        except (ValueError, OverflowError):
            raise _invalid(name, raw) from None
        return -offset if sign == "-" else offset
    try:
        ts = datetime.fromisoformat(_SPACED_OFFSET.sub(r"+\1", raw))
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid(name, raw) from None


def resolve(name: str, instant: Instant, now: datetime | None) -> datetime:
    """The absolute instant; ``now`` is the database's, required when ``instant`` is relative."""
    if isinstance(instant, datetime):
        return instant
    assert now is not None, "a relative instant needs the database's now()"
    try:
        return now + instant
    except OverflowError:
        raise ApiError(
            400, f"'{name}' is too far from now ({now.isoformat()})", parameter=name
        ) from None


def _invalid(name: str, raw: str) -> ApiError:
    return ApiError(400, f"'{name}' must be {FORMS}; not {raw!r}", parameter=name)
