"""Running a readings query: one page and the cursor to the next, or every row for an export; and
how a reading is written in each format."""

import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile

import anyio
import anyio.lowlevel
import asyncpg
import msgspec

from tsapi import cursors, formats
from tsapi.cursors import Position, key_of, value_text
from tsapi.db import Connection, Pool
from tsapi.query import ReadingsQuery

EXPORT_BATCH_ROWS = 2000  # rows per fetch from the server-side cursor, and per chunk sent


@dataclass(frozen=True)
class Page:
    rows: list[asyncpg.Record]
    next: str | None  # the cursor of the next page; None on the last


async def fetch_page(pool: Pool, query: ReadingsQuery, timeout: float) -> Page:
    assert query.limit is not None, "every row is an export, not a page"
    async with pool.acquire(timeout=timeout) as conn:
        now = await _now(conn, query)
        sql, args = query.sql(now)
        rows = await conn.fetch(sql, *args)
    # Rows at the cursor's position come first; skip those a previous page answered.
    skipped = 0
    if query.after is not None:
        while (
            skipped < min(query.after.seen, len(rows)) and key_of(rows[skipped]) == query.after.key
        ):
            skipped += 1
    page = rows[skipped : skipped + query.limit]
    if len(rows) - skipped <= query.limit:
        return Page(page, None)
    last = key_of(page[-1])
    seen = 0
    if key_of(rows[skipped + query.limit]) == last:  # the next page starts amid identical rows
        seen = sum(1 for _ in takewhile(lambda row: key_of(row) == last, reversed(page)))
        if query.after is not None and query.after.key == last:  # so are the skipped rows
            seen += skipped
    return Page(page, cursors.encode(Position(last, seen, now), query.identity()))


@dataclass
class Export:
    """An open server-side cursor over a query's rows, in a read-only transaction on a connection
    of its own until ``resources`` are closed."""

    resources: AsyncExitStack
    cursor: "asyncpg.cursor.Cursor[asyncpg.Record]"  # subscriptable only to type checkers
    first: list[asyncpg.Record]

    async def batches(self) -> AsyncGenerator[list[asyncpg.Record]]:
        batch = self.first
        while batch:
            yield batch
            if len(batch) < EXPORT_BATCH_ROWS:
                return
            # When the client goes away the answer is cancelled. Here, between fetches, the
            # connection is idle and can be released at once; a fetch cut off midway would leave
            # it busy, so fetches are shielded. (Sends to a gone client return without pausing,
            # so this checkpoint is where the cancellation lands.)
            await anyio.lowlevel.checkpoint()
            with anyio.CancelScope(shield=True):
                batch = await self.cursor.fetch(EXPORT_BATCH_ROWS)


async def open_export(pool: Pool, query: ReadingsQuery, timeout: float) -> Export:
    """Start an export; its first batch is fetched here, so that a database that is down or a
    window that is empty are errors answered before any byte is sent."""
    async with AsyncExitStack() as stack:
        conn = await stack.enter_async_context(pool.acquire(timeout=timeout))
        await stack.enter_async_context(conn.transaction(readonly=True))
        now = await _now(conn, query)
        sql, args = query.sql(now)
        cursor = await conn.cursor(sql, *args)
        first = await cursor.fetch(EXPORT_BATCH_ROWS)
        return Export(stack.pop_all(), cursor, first)


async def _now(conn: Connection, query: ReadingsQuery) -> datetime | None:
    """The database's now() for relative from/to: a cursor's, for its walk to keep one window."""
    if query.after is not None:
        return query.after.now
    if not query.relative:
        return None
    now: datetime = await conn.fetchval("SELECT now()")
    return now


class ReadingOut(msgspec.Struct):
    ts: str
    sensor: uuid.UUID | None
    metadata: msgspec.Raw | None
    value: msgspec.Raw | None


def _json(row: asyncpg.Record) -> ReadingOut:
    ts, sensor, metadata, value = row
    # The stored digits as a JSON number; JSON has none for an adopted table's NaN or infinity.
    number = (
        msgspec.Raw(value_text(value).encode()) if value is not None and value.is_finite() else None
    )
    return ReadingOut(formats.format_ts(ts), sensor, metadata, number)


def _csv(row: asyncpg.Record) -> Sequence[object]:
    ts, sensor, metadata, value = row
    return (
        formats.format_ts(ts),
        "" if sensor is None else sensor,
        "" if value is None else value_text(value),
        "" if metadata is None else bytes(metadata).decode(),
    )


READINGS = formats.Table("readings", ("ts", "sensor", "value", "metadata"), _json, _csv)
