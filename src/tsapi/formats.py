"""Answer formats for routes that return rows: JSON (an array, or an envelope that also carries the
next page's cursor), NDJSON and CSV, chosen by ``format=`` or the Accept header. Rows are written
a batch at a time, so that a result of any size streams in constant memory."""

import csv
import enum
import io
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar, cast

import msgspec
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tsapi.errors import ApiError

Row = TypeVar("Row")

_encoder = msgspec.json.Encoder(decimal_format="number")


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2024-05-01T12:00:00.000000Z."""
    if ts.tzinfo is not UTC:  # asyncpg's are UTC already
        ts = ts.astimezone(UTC)
    # Formatted field by field: isoformat() asks the zone for its offset, which costs more than
    # all the rest, for every row of an answer.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - the fastest here
        ts.year,
        ts.month,
        ts.day,
        ts.hour,
        ts.minute,
        ts.second,
        ts.microsecond,
    )


class Format(enum.Enum):
    JSON = "application/json"
    NDJSON = "application/x-ndjson"
    CSV = "text/csv"  # Starlette adds "; charset=utf-8"


_BY_NAME = {"json": Format.JSON, "ndjson": Format.NDJSON, "csv": Format.CSV}
_BY_MEDIA_TYPE = {
    "application/json": Format.JSON,
    "application/x-ndjson": Format.NDJSON,
    "application/ndjson": Format.NDJSON,
    "text/csv": Format.CSV,
    "application/*": Format.JSON,
    "*/*": Format.JSON,
}


@dataclass(frozen=True)
class Output:
    format: Format
    envelope: bool  # JSON only: {"<name>": [...], "next": cursor | null} instead of a bare array


def negotiate(params: Mapping[str, str], accept: str | None) -> Output:
    """The answer's format: ``format=`` if given, else the best the Accept header names, else
    JSON (as when Accept names none that tsapi writes)."""
    name = params.get("format")
    if name is None:
        chosen = _from_accept(accept or "*/*")
    elif name in _BY_NAME:
        chosen = _BY_NAME[name]
    else:
        raise ApiError(
            400, f"'format' must be json, ndjson or csv, not {name!r}", parameter="format"
        )
    envelope = params.get("envelope", "false")
    if envelope not in ("true", "false"):
        raise ApiError(400, "'envelope' must be true or false", parameter="envelope")
    if envelope == "true" and chosen is not Format.JSON:
        raise ApiError(
            400,
            "'envelope' is for JSON answers; NDJSON and CSV carry the next cursor in the Link"
            " header",
            parameter="envelope",
        )
    return Output(chosen, envelope == "true")


def _from_accept(accept: str) -> Format:
    best, best_quality = Format.JSON, 0.0
    for item in accept.split(","):
        media_type, *media_params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in media_params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        chosen = _BY_MEDIA_TYPE.get(media_type.lower())
        if chosen is not None and quality > best_quality:  # on a tie, the first listed wins
            best, best_quality = chosen, quality
    return best


@dataclass(frozen=True)
class Table(Generic[Row]):
    """How one kind of row is written: as a JSON object, and as a CSV line under a header."""

    name: str  # the key of the rows in a JSON envelope
    csv_header: tuple[str, ...]
    as_json: Callable[[Row], object]
    as_csv: Callable[[Row], Sequence[object]]
    # Whether as_json and as_csv give each row's text in their format, to be written as it is:
    # faster, where a row's texts need no escaping or are escaped by the table itself.
    texts: bool = False


class _Writer(Generic[Row]):
    """Bytes for the start, each batch of rows, and the end of an answer."""

    def __init__(self, output: Output, table: Table[Row]) -> None:
        self.output, self.table = output, table
        self.wrote_rows = False

    def start(self) -> bytes:
        if self.output.format is Format.CSV:
            return _csv_lines([self.table.csv_header])
        if self.output.format is Format.JSON:
            return b'{"%s":[' % self.table.name.encode() if self.output.envelope else b"["
        return b""

    def rows(self, rows: Sequence[Row]) -> bytes:
        if not rows:
            return b""
        if self.output.format is Format.CSV:
            if self.table.texts:
                return "".join(cast(list[str], [self.table.as_csv(row) for row in rows])).encode()
            return _csv_lines(map(self.table.as_csv, rows))
        objects = [self.table.as_json(row) for row in rows]
        if self.output.format is Format.NDJSON:
            if self.table.texts:
                return "\n".join(cast(list[str], objects)).encode() + b"\n"
            return _encoder.encode_lines(objects)
        separator = b"," if self.wrote_rows else b""
        self.wrote_rows = True
        if self.table.texts:
            return separator + ",".join(cast(list[str], objects)).encode()
        return separator + _encoder.encode(objects)[1:-1]

    def end(self, next_cursor: str | None) -> bytes:
        if self.output.format is not Format.JSON:
            return b""
        if not self.output.envelope:
            return b"]"
        return b'],"next":' + _encoder.encode(next_cursor) + b"}"


def _csv_lines(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)  # RFC 4180: quoted where needed, CRLF line ends
    return buffer.getvalue().encode()


def respond(
    output: Output,
    table: Table[Row],
    rows: Sequence[Row],
    next_cursor: str | None,
    headers: Mapping[str, str],
) -> Response:
    """One page of rows, whole."""
    writer = _Writer(output, table)
    body = writer.start() + writer.rows(rows) + writer.end(next_cursor)
    return Response(body, headers={**headers, "Vary": "Accept"}, media_type=output.format.value)


def stream(
    output: Output,
    table: Table[Row],
    batches: AsyncIterator[Sequence[Row]],
    resources: AsyncExitStack,
) -> Response:
    """Every row of ``batches``, sent as each batch arrives; ``resources`` (the database
    connection the batches come from) are released when the answer ends, however it ends."""
    return _Streamed(_chunks(_Writer(output, table), batches), resources, output.format.value)


def encode(
    output: Output, table: Table[Row], batches: AsyncIterator[Sequence[Row]]
) -> AsyncGenerator[bytes]:
    """The bytes of an answer of every row of ``batches``, as they come, to write elsewhere
    than to an HTTP answer (``tsapi export``)."""
    return _chunks(_Writer(output, table), batches)


async def _chunks(
    writer: _Writer[Row], batches: AsyncIterator[Sequence[Row]]
) -> AsyncGenerator[bytes]:
    yield writer.start()
    async for batch in batches:
        yield writer.rows(batch)
    yield writer.end(None)


class _Streamed(StreamingResponse):
    def __init__(
        self, chunks: AsyncGenerator[bytes], resources: AsyncExitStack, media_type: str
    ) -> None:
        super().__init__(chunks, headers={"Vary": "Accept"}, media_type=media_type)
        self.chunks, self.resources = chunks, resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # An error after the first byte cannot become an error answer: the connection is then
        # cut before the final chunk, so that no client takes a partial answer for a whole one.
        async with self.resources:
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self.chunks.aclose()
