"""CSV bodies (RFC 4180, UTF-8): a header naming the columns sensor and value, and optionally ts
and metadata, in any order; then a reading per record, checked as a JSON reading is. Empty ts:
the database's now(); empty metadata: null; metadata otherwise a JSON object."""

import csv
import io
from _csv import Reader  # the type csv.reader makes
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from itertools import repeat
from operator import itemgetter

import msgspec

from tsapi import ingest
from tsapi.containment import unstorable
from tsapi.errors import ApiError
from tsapi.ingest import Batch, RowError
from tsapi.parsers import LineError, Parsed
from tsapi.parsers.lines import utf8_errors

COLUMNS = ("ts", "sensor", "value", "metadata")
_REQUIRED = ("sensor", "value")
_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder(decimal_format="number")
_NOT_JSON = object()  # a metadata cell that is not JSON at all


class _Unusual(Exception):
    """Something in the block that the record-by-record pass must judge."""


class CsvParser:
    quoted = True

    def __init__(self) -> None:
        self.columns: dict[str, int] | None = None  # from the header, once read

    def parse(self, block: bytes, first_line: int) -> Parsed:
        try:
            text = block.decode()
        except UnicodeDecodeError:
            return Parsed(errors=utf8_errors(block, first_line))
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header_here = self.columns is None
        if self.columns is None:
            self.columns = _header(_records(reader, first_line))
            if self.columns is None:
                return Parsed()  # only blank lines so far
        try:
            return Parsed(_quickly(reader, self.columns))
        except _Unusual:
            records = _records(csv.reader(io.StringIO(text, newline=""), strict=True), first_line)
            if header_here:
                next(records)  # the header, read above
            return _record_by_record(records, self.columns)


def _records(reader: Reader, first_line: int) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """(line where it starts, cells) per non-blank record, or the record's CSV error."""
    while True:
        start = first_line + reader.line_num
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, exc
            continue
        if cells and (len(cells) > 1 or cells[0].strip()):
            yield start, cells


def _header(records: Iterator[tuple[int, list[str] | csv.Error]]) -> dict[str, int] | None:
    found = next(records, None)
    if found is None:
        return None
    line, cells = found
    if isinstance(cells, csv.Error):
        raise ApiError(400, f"line {line}: the CSV header is not valid CSV: {cells}")
    names = [cell.removeprefix("\ufeff").strip() for cell in cells]
    unknown = [name for name in names if name not in COLUMNS]
    twice = {name for name in names if names.count(name) > 1}
    missing = [name for name in _REQUIRED if name not in names]
    if unknown or twice or missing:
        problems = [f"unknown column {name!r}" for name in unknown]
        problems += [f"column {name!r} named twice" for name in sorted(twice)]
        problems += [f"no {name!r} column" for name in missing]
        raise ApiError(
            400,
            f"line {line}: the CSV header must name the columns sensor and value, and may name "
            f"ts and metadata, in any order: {'; '.join(problems)}",
        )
    return {name: index for index, name in enumerate(names)}


def _quickly(reader: Reader, columns: dict[str, int]) -> Batch:
    """The readings of the reader's records, a column at a time in C where possible; _Unusual
    if any record is for the thorough pass (bad, or merely uncommon: blank lines, odd forms)."""
    try:
        rows = list(reader)
    except csv.Error:
        raise _Unusual from None
    if not rows:
        return Batch()
    if set(map(len, rows)) != {len(columns)}:
        raise _Unusual
    sensors = _column(rows, "sensor", columns)
    if set(map(len, sensors)) != {36} or not ingest.CANONICAL_UUIDS.fullmatch("".join(sensors)):
        raise _Unusual
    try:
        values = list(map(Decimal, _column(rows, "value", columns)))
    except InvalidOperation:
        raise _Unusual from None
    if not ingest.all_storable(values):
        raise _Unusual
    metadata: list[bytes | None] = [None] * len(rows)
    if "metadata" in columns:
        cells = _column(rows, "metadata", columns)
        metadata = [_metadata(cell) if cell else None for cell in cells]
    if "ts" not in columns:
        return Batch(untimed=list(zip(sensors, metadata, values, strict=True)))
    stamps = _stamps(_column(rows, "ts", columns))
    return Batch(timed=list(zip(stamps, sensors, metadata, values, strict=True)))


def _column(rows: list[list[str]], name: str, columns: dict[str, int]) -> list[str]:
    return list(map(itemgetter(columns[name]), rows))


def _stamps(cells: list[str]) -> list[datetime]:
    if "" in cells:  # some readings take now(): uncommon in one body, left to the thorough pass
        raise _Unusual
    try:
        stamps = list(map(datetime.fromisoformat, cells))
    except ValueError:
        raise _Unusual from None
    if not all(map(str.endswith, cells, repeat("Z"))):  # some may have no offset: UTC, then
        stamps = [ts if ts.tzinfo else ts.replace(tzinfo=UTC) for ts in stamps]
    if min(stamps).year == 1 or max(stamps).year == 9999:  # one of the instants tsapi refuses?
        raise _Unusual
    return stamps


def _metadata(cell: str) -> bytes:
    decoded = _decode_metadata(cell)
    if not isinstance(decoded, dict) or unstorable(decoded) is not None:
        raise _Unusual
    return _encoder.encode(decoded)


def _decode_metadata(cell: str) -> object:
    try:
        return _decoder.decode(cell)
    except (msgspec.DecodeError, RecursionError):
        return _NOT_JSON


def _record_by_record(
    records: Iterator[tuple[int, list[str] | csv.Error]], columns: dict[str, int]
) -> Parsed:
    batch = Batch()
    errors: list[RowError] = []  # each naming its line as its row
    for line, cells in records:
        if len(errors) >= ingest.MAX_REPORTED_ERRORS:
            break
        if isinstance(cells, csv.Error):
            errors.append(RowError(line, None, f"not valid CSV: {cells}"))
        elif len(cells) != len(columns):
            errors.append(
                RowError(line, None, f"has {len(cells)} cells; the header names {len(columns)}")
            )
        else:
            row: dict[str, object] = {name: cells[index] or None for name, index in columns.items()}
            if row.get("metadata") is not None:
                row["metadata"] = _decode_metadata(cells[columns["metadata"]])
                if row["metadata"] is _NOT_JSON:
                    errors.append(RowError(line, "metadata", "is not valid JSON"))
                    continue
            ingest.parse_row(line, row, batch, errors)
    return Parsed(batch, [LineError(e.row, e.field, e.reason) for e in errors])
