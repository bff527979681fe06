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
from operator import methodcaller

import msgspec

from tsapi import ingest
from tsapi.ingest import Batch
from tsapi.parsers import LineError, Parsed
from tsapi.parsers.lines import utf8_errors
from tsapi.parsers.lp_syntax import FIELD, LINE, PLAIN_LINE, diagnose
from tsapi.parsers.lp_values import (
    SERIES,
    SERIES_NAMESPACE,
    Refused,
    check_distinct,
    instant,
    series,
    value,
)

__all__ = ["SERIES_NAMESPACE", "LineProtocolParser"]
_encoder = msgspec.json.Encoder()
_GROUPS = methodcaller("groups")


class _Unusual(Exception):
    """Something in the block that the line-by-line pass must judge."""


class LineProtocolParser:
    quoted = False

    def __init__(self, origin: dict[str, str], nanoseconds: int) -> None:
        self.origin = _encoder.encode(origin)  # {"bucket": name} or {"db": name}
        self.nanoseconds = nanoseconds  # per unit of the request's timestamps

    def parse(self, block: bytes, first_line: int) -> Parsed:
        try:
            lines = block.decode().replace("\r\n", "\n").split("\n")
        except UnicodeDecodeError:
            return self._line_by_line(block, first_line)
        try:
            return Parsed(self._quickly(lines[:-1] if lines[-1] == "" else lines))
        except _Unusual:
            return self._line_by_line(block, first_line)

    def _quickly(self, lines: list[str]) -> Batch:
        """The readings of the lines, a column at a time in C where possible; _Unusual unless
        every line is plain, has one float field, and all or none have a timestamp."""
        matches = list(map(PLAIN_LINE.fullmatch, lines))
        if not lines or None in matches:
            raise _Unusual
        heads, fields, stamps = zip(*map(_GROUPS, matches), strict=True)
        keys, _, texts = zip(*map(str.partition, fields, repeat("=")), strict=True)
        digits = "".join(texts)
        # Decimal takes what line protocol does not: signs, underscores, other digits.
        if "," in digits or "+" in digits or "_" in digits or not digits.isascii():
            raise _Unusual
        try:
            values = list(map(Decimal, texts))
        except InvalidOperation:
            raise _Unusual from None  # integers, booleans: the line-by-line pass
        if "e" in digits or "E" in digits or not all(map(Decimal.is_finite, values)):
            raise _Unusual  # perhaps out of range
        cached = list(map(SERIES.get, zip(repeat(self.origin), heads, keys)))
        try:
            found: list[tuple[str, bytes]] = [
                known or series(self.origin, head, key)
                for known, head, key in zip(cached, heads, keys, strict=True)
            ]
            instants = {text: instant(text, self.nanoseconds) for text in set(stamps) - {None}}
        except Refused:
            raise _Unusual from None
        sensors, metadata = zip(*found, strict=True)
        if not instants:
            return Batch(untimed=list(zip(sensors, metadata, values, strict=True)))
        if None in stamps:
            raise _Unusual  # some lines have a timestamp, some not: uncommon in one body
        timed = zip(map(instants.__getitem__, stamps), sensors, metadata, values, strict=True)
        return Batch(timed=list(timed))

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
