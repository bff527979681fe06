"""InfluxDB line protocol bodies as readings.

Each series, a measurement with a tag set and one field key, is a sensor whose UUID is
uuid5(SERIES_NAMESPACE, key), where key is the compact JSON text of
``[measurement, [[tag key, tag value], ...], field key]`` with the tags sorted by key. Each
reading keeps ``{"measurement", "tags", "field"}`` and the bucket (or v1 database) as its
metadata. Every numeric field value is one reading: floats with the digits written, integers,
unsigned integers, booleans as 1 and 0. String fields are checked and skipped: a value column
holds numbers. Timestamps are in the request's precision, truncated to the microsecond that
PostgreSQL keeps; without one, a reading takes the database's now(), as a JSON reading does.
"""

from decimal import Decimal, InvalidOperation
from itertools import repeat
from operator import itemgetter
from typing import cast

import msgspec

from tsapi import ingest
from tsapi.ingest import Batch
from tsapi.parsers import LineError, Parsed
from tsapi.parsers.lines import utf8_errors
from tsapi.parsers.lp_syntax import (
    FIELD,
    LINE,
    PLAIN_LINE,
    PLAIN_TIMED_BODY,
    PLAIN_UNTIMED_BODY,
    diagnose,
)
from tsapi.parsers.lp_values import (
    SERIES,
    SERIES_NAMESPACE,
    Refused,
    check_distinct,
    instant,
    instants,
    series,
    value,
)

__all__ = ["SERIES_NAMESPACE", "LineProtocolParser"]
_encoder = msgspec.json.Encoder()
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class _Unusual(Exception):
    """Something in the block that the line-by-line pass must judge."""


class LineProtocolParser:
    quoted = False

    def __init__(self, origin: dict[str, str], nanoseconds: int) -> None:
        self.origin = _encoder.encode(origin)  # {"bucket": name} or {"db": name}
        self.nanoseconds = nanoseconds  # per unit of the request's timestamps

    def parse(self, block: bytes, first_line: int) -> Parsed:
        try:
            text = block.decode().replace("\r\n", "\n")
        except UnicodeDecodeError:
            return self._line_by_line(block, first_line)
        try:
            return Parsed(self._quickly(text.removesuffix("\n")))
        except _Unusual:
            return self._line_by_line(block, first_line)

    def _quickly(self, text: str) -> Batch:
        """The readings of the lines, whole columns at a time in C; _Unusual unless every line
        is plain, has one float field, and all or none have a timestamp.

        No object is made per line but the reading itself: a match object or tuple per line
        would cost more than the rest, the collector's passes over them above all."""
        timed = text.partition("\n")[0].count(" ") == 2
        if not (PLAIN_TIMED_BODY if timed else PLAIN_UNTIMED_BODY).fullmatch(text):
            raise _Unusual
        # Spaces and newlines only separate the parts, and '=' the field's key from its value.
        parts = text.replace("\n", " ").split(" ")
        step = 3 if timed else 2
        heads, fields = parts[0::step], parts[1::step]
        keys_and_texts = "=".join(fields).split("=")
        keys, texts = keys_and_texts[0::2], keys_and_texts[1::2]
        digits = "".join(texts)
        # Decimal takes what line protocol does not: signs, underscores, other digits.
        if "+" in digits or "_" in digits or not digits.isascii():
            raise _Unusual
        try:
            values = list(map(Decimal, texts))
        except InvalidOperation:
            raise _Unusual from None  # integers, booleans: the line-by-line pass
        if "e" in digits or "E" in digits or not all(map(Decimal.is_finite, values)):
            raise _Unusual  # perhaps out of range
        cached = list(map(SERIES.get, zip(repeat(self.origin), heads, keys)))
        try:
            found = (
                [
                    known or series(self.origin, head, key)
                    for known, head, key in zip(cached, heads, keys, strict=True)
                ]
                if None in cached
                else cast(list[tuple[str, bytes]], cached)
            )
            moments = instants(parts[2::3], self.nanoseconds) if timed else None
        except Refused:
            raise _Unusual from None
        sensors, metadata = map(_FIRST, found), map(_SECOND, found)
        if moments is None:
            return Batch(untimed=list(zip(sensors, metadata, values, strict=True)))
        return Batch(timed=list(zip(moments, sensors, metadata, values, strict=True)))

    def _line_by_line(self, block: bytes, first_line: int) -> Parsed:
        try:
            text, undecodable = block.decode(), set()
        except UnicodeDecodeError:
            parsed = Parsed(errors=utf8_errors(block, first_line))
            text, undecodable = block.decode(errors="replace"), {e.line for e in parsed.errors}
        else:
            parsed = Parsed()
        plain, full = PLAIN_LINE.fullmatch, LINE.fullmatch
        for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), first_line):
            if undecodable and number in undecodable:
                continue
            match = plain(line) or full(line)
            if match is None:
                if line.lstrip(" ")[:1] not in ("", "#"):  # not blank, nor a comment
                    parsed.errors.append(LineError(number, None, str(diagnose(line))))
                continue
            head, fields, stamp = match.groups()
            try:
                self._readings(head, fields, stamp, parsed.batch)
            except Refused as refused:
                parsed.errors.append(LineError(number, refused.field, refused.reason))
            if len(parsed.errors) >= ingest.MAX_REPORTED_ERRORS:
                break
        parsed.errors.sort(key=lambda error: error.line)
        return parsed

    def _readings(self, head: str, fields: str, stamp: str | None, batch: Batch) -> None:
        if '"' in fields or "\\" in fields:
            pairs = [(found["key"], found["value"]) for found in FIELD.finditer(fields)]
        else:
            pairs = [field.partition("=")[::2] for field in fields.split(",")]
        check_distinct(pairs)
        ts = None if stamp is None else instant(stamp, self.nanoseconds)
        for key, text in pairs:
            number = value(key, text)
            if number is None:
                continue
            sensor, metadata = SERIES.get((self.origin, head, key)) or series(
                self.origin, head, key
            )
            if ts is None:
                batch.untimed.append((sensor, metadata, number))
            else:
                batch.timed.append((ts, sensor, metadata, number))
