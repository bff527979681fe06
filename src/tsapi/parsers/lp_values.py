"""What line protocol's parts become in a reading: a series' sensor and metadata, a field value's
number, a timestamp's instant. See lineprotocol.py for the mapping as a whole."""

import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import repeat
from operator import floordiv, mul

import msgspec

from tsapi import ingest
from tsapi.parsers.lp_syntax import MEASUREMENT, TAG, unescape_key, unescape_measurement

SERIES_NAMESPACE = uuid.UUID("d4071a37-630c-5e20-bab5-00aaf8080382")
# InfluxDB's own bounds: nanoseconds since the epoch in an int64, but for its two extremes.
_MIN_NS, _MAX_NS = -(2**63) + 2, 2**63 - 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_BOOLEANS = dict.fromkeys(("t", "T", "true", "True", "TRUE"), Decimal(1)) | dict.fromkeys(
    ("f", "F", "false", "False", "FALSE"), Decimal(0)
)
_INTEGER = re.compile(r"-?[0-9]+")
_encoder = msgspec.json.Encoder()
# Series seen lately, as written, with their sensor and metadata: most bodies repeat a few series
# many times. Shared by requests, and emptied when full.
SERIES: dict[tuple[bytes, str, str], tuple[str, bytes]] = {}
_SERIES_KEPT = 100_000


class Refused(Exception):
    """A line that is line protocol, but that tsapi cannot store: why, and for which field."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field, self.reason = field, reason


def series(origin: bytes, head: str, key: str) -> tuple[str, bytes]:
    """The sensor (as text) and metadata of a line's head (measurement and tags, as written) and
    field key; ``origin`` is the JSON object naming the bucket or database."""
    found = MEASUREMENT.match(head)
    assert found is not None  # the line matched
    measurement = unescape_measurement(found.group())
    tags: dict[str, str] = {}
    for tag in TAG.finditer(head, found.end()):
        name = unescape_key(tag["key"])
        if name in tags:
            raise Refused(None, f"tag {name!r} appears twice")
        tags[name] = unescape_key(tag["value"])
    tags = dict(sorted(tags.items()))
    field = unescape_key(key)
    key_text = _encoder.encode([measurement, list(map(list, tags.items())), field]).decode()
    sensor = str(uuid.uuid5(SERIES_NAMESPACE, key_text))
    metadata = _encoder.encode({"measurement": measurement, "tags": tags, "field": field})
    found_series = sensor, metadata[:-1] + b"," + origin[1:]
    if len(SERIES) >= _SERIES_KEPT:
        SERIES.clear()
    SERIES[(origin, head, key)] = found_series
    return found_series


def instant(text: str, nanoseconds: int) -> datetime:
    """A timestamp of ``nanoseconds`` per unit, truncated to the microsecond toward the past."""
    total = int(text) * nanoseconds
    if not _MIN_NS <= total <= _MAX_NS:
        raise Refused(None, f"timestamp {text} is out of range (InfluxDB's, 1677 to 2262)")
    return _EPOCH + timedelta(0, 0, total // 1000)


def instants(texts: list[str], nanoseconds: int) -> list[datetime]:
    """What instant() makes of each timestamp, computed a whole column at a time in C."""
    unique = list(set(texts))
    totals = list(map(mul, map(int, unique), repeat(nanoseconds)))
    if min(totals) < _MIN_NS or max(totals) > _MAX_NS:
        raise Refused(None, "a timestamp is out of range")  # instant() says which, and how
    micros = map(floordiv, totals, repeat(1000))
    moments = map(_EPOCH.__add__, map(_MICROSECOND.__mul__, micros))  # quicker than timedelta()
    found = dict(zip(unique, moments, strict=True))
    return list(map(found.__getitem__, texts))


def check_distinct(pairs: list[tuple[str, str]]) -> None:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise Refused(unescape_key(twice), "this field key appears twice in the line")


def value(key: str, text: str) -> Decimal | None:
    """The reading a field value makes; None for a string."""
    first, last = text[0], text[-1]
    if first == '"':
        return None
    if last in "iu" and _INTEGER.fullmatch(text, 0, len(text) - 1):
        number = int(text[:-1])
        low, high = (-(2**63), 2**63 - 1) if last == "i" else (0, 2**64 - 1)
        if not low <= number <= high:
            kind = "integer" if last == "i" else "unsigned integer"
            raise Refused(unescape_key(key), f"{text} is out of range for a 64-bit {kind}")
        return Decimal(number)
    if first in "tTfF":
        boolean = _BOOLEANS.get(text)
        if boolean is None:
            raise Refused(unescape_key(key), f"{text!r} is not a boolean (t, true, f, false…)")
        return boolean
    # Decimal takes every float of line protocol, and more: signs, underscores, other scripts'
    # digits, NaN and infinities, which are refused here.
    if first == "+":
        raise Refused(unescape_key(key), f"{text!r} is not a valid field value")
    try:
        decimal = Decimal(text)
    except InvalidOperation:
        decimal = None
    if (
        decimal is None
        or not decimal.is_finite()
        or "_" in text
        or first == "+"
        or not text.isascii()
    ):
        raise Refused(unescape_key(key), f"{text!r} is not a valid field value")
    # Short plain decimals are in range; others are checked as InfluxDB (a float64) and
    # PostgreSQL's numeric would.
    if (len(text) > 300 or "e" in text or "E" in text) and (
        not math.isfinite(float(text)) or not ingest.is_storable(decimal)
    ):
        raise Refused(unescape_key(key), f"{text} is out of range")
    return decimal
