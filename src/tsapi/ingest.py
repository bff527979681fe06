"""Turning a request body into validated readings, or into errors that name each bad row.

A typed msgspec decoder takes the common, well-formed body at C speed. Anything it does not take
goes to a thorough second pass that finds every problem (not just the first) and is the
authority on what is valid.
"""

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Clamped, Context, Decimal, InvalidOperation, Overflow, Rounded
from typing import Annotated, Any

import msgspec

from tsapi.containment import unstorable
from tsapi.errors import ApiError

MAX_REPORTED_ERRORS = 100
# PostgreSQL numeric: up to 131072 digits before the decimal point and 16383 after.
_MAX_ADJUSTED_EXPONENT = 131071
_MIN_EXPONENT = -16383
# Rounding a value in this context flags it (Rounded, Clamped or Overflow) if numeric cannot hold
# it, and also if it has over 1000 digits: a batch with flagged values is checked value by value.
_NUMERIC_RANGE = Context(prec=1000, Emax=_MAX_ADJUSTED_EXPONENT, Emin=_MIN_EXPONENT + 999, traps=[])

# asyncpg sends these two instants as -infinity and infinity, so they cannot be stored as given.
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)
TS_RANGE_REASON = "must be after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z"

SHAPE_HINT = "the body must be a JSON array of readings, or a single reading object"

# A sensor is a UUID, or its canonical text (which asyncpg encodes without a Python call).
Sensor = uuid.UUID | str
Timed = tuple[datetime, Sensor, bytes | None, Decimal]
Untimed = tuple[Sensor, bytes | None, Decimal]

# The fast path takes sensors in the canonical form only: 36 characters, checked a whole batch at a
# time. Other spellings that uuid.UUID takes go to the thorough pass, as do invalid ones.
_CanonicalUuid = Annotated[str, msgspec.Meta(min_length=36, max_length=36)]
_HEX = "[0-9a-fA-F]"
CANONICAL_UUIDS = re.compile(f"(?:{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})*")
_NULL = msgspec.Raw(b"null")


class _Reading(msgspec.Struct, gc=False):  # no reference cycles: the collector need not track it
    sensor: _CanonicalUuid
    value: Decimal
    ts: datetime | None = None
    metadata: msgspec.Raw = _NULL


_fast_decoder = msgspec.json.Decoder(list[_Reading] | _Reading)
_line_decoder = msgspec.json.Decoder(_Reading)
_any_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")
_BYTE_OFFSET = re.compile(r"\(byte (\d+)\)")
# A \u escape of half a UTF-16 surrogate pair, the other half missing (which msgspec reports as
# a truncated body).
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
# What PostgreSQL's jsonb may refuse: a NUL character, or a number too large or too long.
_MAYBE_UNSTORABLE_JSON = re.compile(rb"\\u0000|[eE][-+]?\d{5,}|\d{16000,}")


@dataclass
class Batch:
    """Valid readings, split by whether they carry a timestamp (if not: the database's now())."""

    timed: list[Timed] = field(default_factory=list)
    untimed: list[Untimed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.timed) + len(self.untimed)


@dataclass(frozen=True)
class RowError:
    row: int
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason}


def parse_json(body: bytes, max_rows: int) -> Batch:
    """Readings from a JSON body, or an ApiError: 400 bad JSON, 413 too many rows, 422 bad rows."""
    try:
        decoded = _fast_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return _parse_thoroughly(body, max_rows)
    readings = decoded if isinstance(decoded, list) else [decoded]
    _check_row_count(len(readings), max_rows)
    batch = _batch_of(readings)
    return _parse_thoroughly(body, max_rows) if batch is None else batch


def parse_lines(block: bytes, count: int) -> Batch | None:
    """The readings of ``count`` NDJSON lines (blank ones aside) by the fast path, or None if any
    line is for the thorough pass, which parse_row does a line at a time."""
    try:
        readings = _line_decoder.decode_lines(block)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    # A line holding two objects would pass for two lines.
    return _batch_of(readings) if len(readings) == count else None


def _batch_of(readings: list[_Reading]) -> Batch | None:
    """The decoded readings as a batch, or None if any needs the thorough pass's judgement."""
    if not all_storable([reading.value for reading in readings]) or not CANONICAL_UUIDS.fullmatch(
        "".join([reading.sensor for reading in readings])
    ):
        return None
    batch = Batch()
    for reading in readings:
        stored_metadata: bytes | None = None
        if reading.metadata != _NULL:
            stored_metadata = bytes(reading.metadata)
            if stored_metadata[:1] != b"{" or _MAYBE_UNSTORABLE_JSON.search(stored_metadata):
                return None
        ts = reading.ts
        if ts is None:
            batch.untimed.append((reading.sensor, stored_metadata, reading.value))
        else:
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            if ts.year in (1, 9999) and not _FIRST_INSTANT < ts < _LAST_INSTANT:
                return None
            batch.timed.append((ts, reading.sensor, stored_metadata, reading.value))
    return batch


def _parse_thoroughly(body: bytes, max_rows: int) -> Batch:
    try:
        decoded = _any_decoder.decode(body)
    except msgspec.DecodeError as exc:
        position = _describe_position(body, str(exc))
        raise ApiError(400, f"invalid JSON: {position}; {SHAPE_HINT}") from None
    except RecursionError:
        raise ApiError(400, f"invalid JSON: nested too deeply; {SHAPE_HINT}") from None
    if isinstance(decoded, dict):
        decoded = [decoded]
    if not isinstance(decoded, list):
        raise ApiError(400, f"{SHAPE_HINT}, not a JSON {_json_type(decoded)}")
    _check_row_count(len(decoded), max_rows)
    batch = Batch()
    errors: list[RowError] = []
    for index, row in enumerate(decoded):
        parse_row(index, row, batch, errors)
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        raise ApiError(
            422,
            f"{len(errors)}{'+' if len(errors) >= MAX_REPORTED_ERRORS else ''} invalid "
            f"reading(s); nothing was written",
            errors=[error.as_dict() for error in errors],
        )
    return batch


def parse_row(index: int, row: object, batch: Batch, errors: list[RowError]) -> None:
    if not isinstance(row, dict):
        errors.append(RowError(index, None, f"must be a JSON object, not a {_json_type(row)}"))
        return
    found = len(errors)
    sensor = _parse_sensor(row.get("sensor"), index, errors)
    value = _parse_value(row.get("value"), index, errors)
    ts = _parse_ts(row.get("ts"), index, errors)
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        errors.append(
            RowError(
                index, "metadata", f"must be a JSON object or null, not {_json_type(metadata)}"
            )
        )
    elif metadata is not None and (problem := unstorable(metadata)) is not None:
        errors.append(RowError(index, "metadata", problem))
    if len(errors) > found or sensor is None or value is None:
        return
    stored_metadata = None if metadata is None else _encoder.encode(metadata)
    if ts is None:
        batch.untimed.append((sensor, stored_metadata, value))
    else:
        batch.timed.append((ts, sensor, stored_metadata, value))


def _parse_sensor(raw: object, index: int, errors: list[RowError]) -> uuid.UUID | None:
    if raw is None:
        errors.append(RowError(index, "sensor", "is required"))
    elif not isinstance(raw, str):
        errors.append(RowError(index, "sensor", f"must be a UUID string, not {_json_type(raw)}"))
    else:
        try:
            return uuid.UUID(raw)
        except ValueError:
            errors.append(RowError(index, "sensor", f"{_clip(raw)} is not a UUID"))
    return None


def _parse_value(raw: object, index: int, errors: list[RowError]) -> Decimal | None:
    if raw is None:
        errors.append(RowError(index, "value", "is required"))
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        errors.append(RowError(index, "value", f"must be a number, not {_json_type(raw)}"))
        return None
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        errors.append(RowError(index, "value", f"{_clip(str(raw))} is not a number"))
        return None
    if not is_storable(value):
        errors.append(
            RowError(
                index,
                "value",
                f"{_clip(str(raw))} is not a finite number within PostgreSQL's numeric range",
            )
        )
        return None
    return value


def _parse_ts(raw: object, index: int, errors: list[RowError]) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        errors.append(RowError(index, "ts", f"must be an RFC 3339 string, not {_json_type(raw)}"))
        return None
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        errors.append(RowError(index, "ts", f"{_clip(raw)} is not an RFC 3339 timestamp"))
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    try:
        if _FIRST_INSTANT < ts < _LAST_INSTANT:
            return ts
    except OverflowError:  # an offset that pushes it past year 1 or 9999
        pass
    errors.append(RowError(index, "ts", f"{_clip(raw)} {TS_RANGE_REASON}"))
    return None


def all_storable(values: list[Decimal]) -> bool:
    """Whether numeric can hold every value; one C call per value where it is plain that it can."""
    context = _NUMERIC_RANGE.copy()
    if all(map(Decimal.is_finite, values)):
        for _ in map(context.plus, values):
            pass
        if not (context.flags[Rounded] or context.flags[Clamped] or context.flags[Overflow]):
            return True
    return all(map(is_storable, values))


def is_storable(value: Decimal) -> bool:
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return value.adjusted() <= _MAX_ADJUSTED_EXPONENT and exponent >= _MIN_EXPONENT


def _check_row_count(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise ApiError(413, f"{count} readings in one request; the limit is {max_rows}")


def _describe_position(body: bytes, message: str) -> str:
    if not body.strip():
        return "the body is empty"
    match = _BYTE_OFFSET.search(message)
    if match is not None:
        offset = int(match.group(1))
        message = _BYTE_OFFSET.sub("", message.removeprefix("JSON is malformed: ")).strip()
    elif "truncated" in message and (lone := _LONE_SURROGATE.search(body)) is not None:
        offset = lone.start()
        message = f"{lone.group().decode()} is half of a UTF-16 surrogate pair, not a character"
    elif "truncated" in message:
        offset, message = len(body), "the body ends before the JSON does"
    else:
        return message
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return f"{message} at line {line}, column {column} (byte {offset})"


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
