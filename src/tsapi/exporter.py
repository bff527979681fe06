"""``tsapi export``: the readings of sensors and a time range as CSV, NDJSON or JSON, streamed,
either from a running tsapi (``GET /readings?limit=all``) or from the database through a
server-side cursor, into a file (whole, or not at all) or stdout. Both ways write the same bytes,
which are those the API answers."""

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import msgspec

from tsapi import db, formats, reader
from tsapi.query import ReadingsQuery, parse_readings_query
from tsapi.settings import Settings

FORMATS = ("csv", "ndjson", "json")
Write = Callable[[bytes], object]


class ExportError(Exception):
    """What kept the export from finishing; a file being written is then removed."""


def parameters(
    sensors: Sequence[str],
    start: str | None,
    end: str | None,
    metadata: str | None,
    order: str,
    fmt: str,
) -> dict[str, str]:
    """GET /readings's parameters for the export (sensors comma-separated)."""
    given = {"from": start, "to": end, "metadata": metadata, "sensor": ",".join(sensors) or None}
    return {
        "limit": "all",
        "order": order,
        "format": fmt,
        **{name: value for name, value in given.items() if value is not None},
    }


def query_of(params: dict[str, str], settings: Settings) -> ReadingsQuery:
    """The query the parameters make, checked as the API checks them (ApiError if bad)."""
    multi = {"sensor": [params["sensor"]] if "sensor" in params else []}
    return parse_readings_query(params, multi, settings.default_limit, settings.max_limit)


async def from_database(ready: Settings, params: dict[str, str], write: Write) -> None:
    query = query_of(params, ready)
    output = formats.negotiate(params, None)
    conn = await db.connect(ready)
    try:
        # One snapshot, read through a cursor a batch at a time: flat memory whatever the size.
        async with conn.transaction(readonly=True):
            sql, args = query.sql(await reader.now_for(conn, query))
            cursor = await conn.cursor(sql, *args)

            async def batches() -> AsyncIterator[list[asyncpg.Record]]:
                while batch := await cursor.fetch(reader.EXPORT_BATCH_ROWS):
                    yield batch

            async for chunk in formats.encode(output, reader.READINGS, batches()):
                write(chunk)
    finally:
        await conn.close()


async def from_http(url: str, token: str | None, params: dict[str, str], write: Write) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        async with (
            httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=300) as client,
            client.stream("GET", "/readings", params=params) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise ExportError(f"{url} answered {response.status_code}: {_error(response)}")
            async for chunk in response.aiter_bytes():
                write(chunk)
    except httpx.TransportError as exc:
        # Among them, an answer cut before its end: tsapi's way of saying the export failed.
        raise ExportError(
            f"the export from {url} did not finish: {exc or type(exc).__name__}"
        ) from None


def _error(response: httpx.Response) -> str:
    try:
        return str(msgspec.json.decode(response.content)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return response.text[:200]


@contextlib.contextmanager
def destination(output: Path | None) -> Iterator[Write]:
    """Where the bytes go: stdout, or a file that appears, whole, only once all is written."""
    if output is None:
        yield _to_stdout
        _to_stdout(b"")
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("wb") as file:
            yield file.write
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _to_stdout(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        if not data:
            sys.stdout.buffer.flush()
    except BrokenPipeError:  # `tsapi export | head`: the reader took all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        raise ExportError("the export was cut short: its output was closed") from None


def format_of(output: Path | None, given: str | None) -> str:
    if given is not None:
        return given
    suffix = "" if output is None else output.suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "csv"
