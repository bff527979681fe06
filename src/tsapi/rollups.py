"""Keeping rollups up to date without slowing writes.

Writers do almost nothing: a batch holding rows older than the newest published threshold logs
its time range, in its own transaction. A refresher (any tsapi process, one at a time) publishes
new thresholds, waits until every transaction that began before that is over, then recomputes
the due buckets in one transaction. Queries combine rollup rows with readings for whatever is
not materialized yet, so answers are always those of the raw rows.
"""

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

import structlog

from tsapi.db import Connection

log = structlog.get_logger(__name__)

ORIGIN = datetime(1, 1, 1, tzinfo=UTC)  # a Monday: weeks start on Mondays
LOCK_KEY = 7_362_914_002
SETTLE = timedelta(seconds=5)  # rows this late still land in unpublished buckets, unlogged
LOG_SQL = """INSERT INTO tsapi_rollup_log (lo, hi)
             SELECT lo, hi FROM unnest($1::timestamptz[], $2::timestamptz[]) AS l(lo, hi)
             WHERE lo < (SELECT max(published) FROM tsapi_rollup_state)"""
_MAX_LOGGED_GAP = timedelta(hours=1)


def bucket_start(ts: datetime, width: timedelta) -> datetime:
    return ORIGIN + (ts - ORIGIN) // width * width


def spans(stamps: list[datetime]) -> tuple[list[datetime], list[datetime]]:
    """The time ranges a batch touches, as (lows, highs): one range unless the batch has
    far-apart clusters, so that a late backfill does not mark years as due."""
    earliest, latest = min(stamps), max(stamps)
    if latest - earliest <= _MAX_LOGGED_GAP:
        return [earliest], [latest]
    lows: list[datetime] = []
    highs: list[datetime] = []
    for ts in sorted(stamps):
        if highs and ts - highs[-1] <= _MAX_LOGGED_GAP:
            highs[-1] = ts
        else:
            lows.append(ts)
            highs.append(ts)
    return lows, highs


class Rollups:
    def __init__(self, widths: list[timedelta], wait_timeout: float = 10.0) -> None:
        self.widths = sorted(widths)
        self.wait_timeout = wait_timeout

    async def setup(self, conn: Connection) -> None:
        """Register the configured widths; a new width is materialized from all history."""
        await conn.execute(
            # The origin is spelled out: asyncpg sends datetime.min as -infinity.
            """INSERT INTO tsapi_rollup_state (width_s, published, materialized)
               SELECT w, '0001-01-01 00:00:00+00', '0001-01-01 00:00:00+00'
               FROM unnest($1::integer[]) AS w
               ON CONFLICT (width_s) DO NOTHING""",
            [int(width.total_seconds()) for width in self.widths],
        )
        await conn.execute(
            "DELETE FROM tsapi_rollup_state WHERE NOT (width_s = ANY($1::integer[]))",
            [int(width.total_seconds()) for width in self.widths],
        )

    async def refresh(self, conn: Connection) -> int | None:
        """Materialize what is due; the number of rollup rows written, or None when another
        process is refreshing or a transaction older than the new threshold is still open."""
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            return None
        try:
            await conn.execute(
                """UPDATE tsapi_rollup_state
                   SET published = greatest(published, date_bin(make_interval(secs => width_s),
                       now() - $1::interval, '0001-01-01 00:00:00+00'))""",
                SETTLE,
            )
            # Taken after that commit: every transaction begun earlier may have read the old
            # thresholds.
            published_at = await conn.fetchval("SELECT now()")
            if not await self._wait_for_older_transactions(conn, published_at):
                return None
            async with conn.transaction():
                # A first refresh over years of adopted data is long, and must finish.
                await conn.execute("SET LOCAL statement_timeout = 0")
                written: int = await conn.fetchval("SELECT tsapi_materialize_rollups()")
            return written
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)

    async def _wait_for_older_transactions(self, conn: Connection, since: datetime) -> bool:
        # A writer whose transaction began before the thresholds moved may have read the old
        # ones and not logged its rows: they must be committed (or gone) before recomputing.
        deadline = time.monotonic() + self.wait_timeout
        while time.monotonic() < deadline:
            if not await conn.fetchval(
                """SELECT EXISTS (
                       SELECT FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                         AND backend_type = 'client backend' AND xact_start <= $1)""",
                since,
            ):
                return True
            await asyncio.sleep(0.05)
        log.info("rollup refresh postponed: a long transaction is open")
        return False

    def _first_whole_bucket(self, since: datetime) -> datetime:
        """The first instant from ``since`` on where a bucket of every width begins."""
        common = timedelta(seconds=math.lcm(*(int(w.total_seconds()) for w in self.widths)))
        return ORIGIN - (ORIGIN - since) // common * common

    async def rebuild(
        self, conn: Connection, start: datetime, end: datetime, kept_since: datetime | None
    ) -> tuple[datetime, int]:
        """Recompute every bucket touching [start, end) from the readings, but none that begins
        before ``kept_since``: the readings before it were dropped, and the rollups are all
        that is left of them. The start kept to, and the rollup rows written."""
        if kept_since is not None and self.widths:
            start = max(start, self._first_whole_bucket(min(kept_since, end)))
        if start >= end:
            return start, 0
        await conn.execute(
            "INSERT INTO tsapi_rollup_log (lo, hi) VALUES ($1, $2)",
            start,
            end - timedelta(microseconds=1),
        )
        written = None
        while written is None:
            written = await self.refresh(conn)
            if written is None:
                await asyncio.sleep(0.2)
        return start, written
