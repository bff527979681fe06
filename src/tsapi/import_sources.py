"""What ``tsapi import`` reads: files (or stdin) of JSON, NDJSON, CSV or InfluxDB line protocol,
gzipped or not, cut into chunks of whole readings, each with the line of every row it holds and an
idempotency key that only its content and what precedes it decide (so that running the same
import again sends the same chunks under the same keys)."""

import gzip
import hashlib
import importlib
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import msgspec

from tsapi.ingest import Batch

FORMATS = ("json", "ndjson", "csv", "line")
SUFFIXES = {
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".csv": "csv",
    ".lp": "line",
    ".line": "line",
}
# Every chunk is sent as a JSON array (the body an Idempotency-Key covers on every tsapi): NDJSON
# lines as they are, CSV and line protocol as read by tsapi's parsers of them (tsapi.parsers).
CONTENT_TYPE = "application/json"
_PARSERS = {
    "csv": ("tsapi.parsers.csv", "CsvParser"),
    "line": ("tsapi.parsers.lineprotocol", "LineProtocolParser"),
}
# Line protocol timestamps: nanoseconds per unit of each precision, as InfluxDB's v2 API has them.
PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_encoder = msgspec.json.Encoder(decimal_format="number")
_GZIP_MAGIC = b"\x1f\x8b"
_elements = msgspec.json.Decoder(list[msgspec.Raw] | msgspec.Raw)
_element = msgspec.json.Decoder(msgspec.Raw)


class SourceError(ValueError):
    """A file that cannot be read as its format; the message names the file (and line)."""


@dataclass(frozen=True)
class Chunk:
    index: int
    body: bytes
    content_type: str
    rows: int  # readings (or lines that should be readings) in it
    # The file's line of each JSON row, or of each line of a text body (CSV: the header first).
    lines: list[int]
    key: str


def format_of(name: str, given: str | None) -> str:
    if given is not None:
        return given
    path = Path(name.removesuffix(".gz"))
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise SourceError(
            f"{name}: cannot tell the format from the name; give --format ({', '.join(FORMATS)})"
        )
    return found


class Source:
    """One input, read once, front to back."""

    def __init__(self, name: str, fmt: str, parser_args: tuple[Any, ...] = ()) -> None:
        self.name, self.format = name, fmt
        self.parser_args = parser_args  # line protocol: ({"bucket": name}, precision in ns)
        self.size = None if name == "-" else Path(name).stat().st_size  # missing: an error now
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] = io.BytesIO()

    def position(self) -> int:
        """Bytes read from the file itself so far (compressed ones for a gzipped file)."""
        if self._raw is None:
            return 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):  # a pipe; a file read and closed
            return self.size or 0

    def chunks(self, size: int) -> Iterator[Chunk]:
        self._raw = sys.stdin.buffer if self.name == "-" else Path(self.name).open("rb")  # noqa: SIM115
        try:
            magic = self._raw.peek(2)[:2] if isinstance(self._raw, io.BufferedReader) else b""
            self._stream = self._raw
            if magic == _GZIP_MAGIC:
                self._stream = cast(IO[bytes], gzip.GzipFile(fileobj=self._raw))
            yield from self._chunks(size)
        finally:
            if self.name != "-":
                self._raw.close()

    def _chunks(self, size: int) -> Iterator[Chunk]:
        hashed = hashlib.sha256(self.format.encode())
        parts = self._json(size) if self.format == "json" else self._lines(size)
        for index, (text, rows, lines) in enumerate(parts):
            body = text if self.format == "json" else self._as_json(text, lines)
            if self.format == "csv":
                lines = lines[1:]  # the header's, which every CSV chunk starts with
            # The key of a chunk stands for everything up to its end: the same input gives the
            # same keys, and so does a file that has grown since, for the chunks it had.
            hashed.update(len(body).to_bytes(8, "big") + body)
            key = f"tsapi-import-{hashed.hexdigest()[:40]}-{index}"
            yield Chunk(index, body, CONTENT_TYPE, rows, lines, key)

    def _json(self, size: int) -> Iterator[tuple[bytes, int, list[int]]]:
        data = self._stream.read()
        try:
            decoded = _elements.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise SourceError(f"{self.name}: not a JSON array of readings: {exc}") from None
        elements = decoded if isinstance(decoded, list) else [decoded]
        offset, lines, line = 0, [], 1
        for element in elements:  # each element's line, found in order in the text
            start = data.index(bytes(element), offset)
            line += data.count(b"\n", offset, start)
            lines.append(line)
            offset = start
        for start in range(0, len(elements), size):
            part = elements[start : start + size]
            yield b"[" + b",".join(map(bytes, part)) + b"]", len(part), lines[start : start + size]

    def _lines(self, size: int) -> Iterator[tuple[bytes, int, list[int]]]:
        header: tuple[bytes, int] | None = None
        body, rows, lines = bytearray(), 0, []
        record, record_lines = bytearray(), []
        for number, line in enumerate(self._stream, 1):
            record += line
            record_lines.append(number)
            # A CSV record ends where its quotes balance (a quoted cell may hold newlines).
            if self.format == "csv" and record.count(b'"') % 2:
                continue
            if not record.strip() or (self.format == "line" and record.lstrip().startswith(b"#")):
                record, record_lines = bytearray(), []
                continue
            if self.format == "ndjson":
                _check_json(self.name, number, record)
            if self.format == "csv" and header is None:
                header = (bytes(record.rstrip(b"\r\n")) + b"\r\n", record_lines[0])
            else:
                if not body and header is not None:
                    body += header[0]
                    lines.append(header[1])
                body += record if record.endswith(b"\n") else record + b"\n"
                rows += 1
                lines += record_lines
                if rows == size:
                    yield bytes(body), rows, lines
                    body, rows, lines = bytearray(), 0, []
            record, record_lines = bytearray(), []
        if record.strip():
            raise SourceError(f"{self.name}:{record_lines[0]}: a quoted CSV cell never ends")
        if rows:
            yield bytes(body), rows, lines

    def _as_json(self, text: bytes, lines: list[int]) -> bytes:
        """A JSON array of the readings of a block of lines (``lines``: their numbers)."""
        if self.format == "ndjson":
            return b"[" + b",".join(text.splitlines()) + b"]"
        module, name = _PARSERS[self.format]
        try:
            parser: Any = getattr(importlib.import_module(module), name)(*self.parser_args)
        except (ImportError, AttributeError):
            raise SourceError(
                f"{self.name}: this tsapi cannot read {self.format} files yet"
            ) from None
        parsed = parser.parse(text, 1)
        if parsed.errors:
            first = parsed.errors[0]
            more = f" (and {len(parsed.errors) - 1} more)" if len(parsed.errors) > 1 else ""
            field = f"{first.field}: " if first.field else ""
            line = lines[min(first.line, len(lines)) - 1]
            raise SourceError(f"{self.name}:{line}: {field}{first.reason}{more}")
        return _readings_json(parsed.batch)


def _check_json(name: str, line: int, text: bytearray) -> None:
    """An NDJSON line must be JSON by itself (what it holds, the server checks)."""
    try:
        _element.decode(text)
    except msgspec.DecodeError as exc:
        raise SourceError(f"{name}:{line}: invalid JSON: {exc}") from None


def _readings_json(batch: Batch) -> bytes:
    readings: list[dict[str, object]] = [
        {"ts": ts.isoformat(), "sensor": str(sensor), "metadata": _raw(meta), "value": value}
        for ts, sensor, meta, value in batch.timed
    ]
    readings += [
        {"sensor": str(sensor), "metadata": _raw(meta), "value": value}
        for sensor, meta, value in batch.untimed
    ]
    return _encoder.encode(readings)


def _raw(metadata: bytes | None) -> msgspec.Raw | None:
    return None if metadata is None else msgspec.Raw(metadata)
