"""Running a readings query: one page and the cursor to the next, or every row for an export; and
how a reading is written in each format."""

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile

import anyio
import anyio.lowlevel
import asyncpg

from tsapi import cursors, formats
from tsapi.cursors import Position, key_of
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
        now = await now_for(conn, query)
        sql, args = query.sql(now)
        rows = await conn.fetch(sql, *args)
    if now is None and query.resolved_in_sql:
        now = _take_now(rows)
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
        sql, args = query.sql(await now_for(conn, query))
        cursor = await conn.cursor(sql, *args)
        first = await cursor.fetch(EXPORT_BATCH_ROWS)
        return Export(stack.pop_all(), cursor, first)


def _take_now(rows: list[asyncpg.Record]) -> datetime:
    """The now() a page's query resolved its window against, taken out of its rows: the one
    row without a sensor key (query.NOW_ROW), first but for a plan that runs it elsewhere."""
    index = next(i for i, row in enumerate(rows) if row[1] is None)
    return datetime.fromisoformat(rows.pop(index)[0])


async def now_for(conn: Connection, query: ReadingsQuery) -> datetime | None:
    """The database's now() for relative from/to, fetched when the query cannot use its own: a
    cursor's, for its walk to keep one window."""
    if query.after is not None:
        return query.after.now
    if query.resolved_in_sql or not query.relative:
        return None
    now: datetime = await conn.fetchval("SELECT now()")
    return now


# A row of query.COLUMNS in JSON; none of its texts needs escaping.
_JSON_OBJECT = '{"ts":"%s","sensor":%s,"metadata":%s,"value":%s}'
_NOT_JSON_NUMBERS = ("", "NaN", "Infinity", "-Infinity")  # an adopted table's; and NULL


def reading_json(row: asyncpg.Record) -> str:
    ts, sensor, value, metadata = row
    return _JSON_OBJECT % (
        ts,
        f'"{sensor}"' if sensor else "null",
        metadata or "null",
        "null" if value in _NOT_JSON_NUMBERS else value,
    )


def _csv(row: asyncpg.Record) -> str:
    ts, sensor, value, metadata = row
    if not metadata:
        return f"{ts},{sensor},{value},\r\n"
    # RFC 4180, as csv.writer writes it but for metadata, always quoted: JSON nearly always
    # holds a quote.
    quoted = metadata.replace('"', '""')
    return f'{ts},{sensor},{value},"{quoted}"\r\n'


READINGS = formats.Table(
    "readings", ("ts", "sensor", "value", "metadata"), reading_json, _csv, texts=True
)
