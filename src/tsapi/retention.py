"""Retention: readings older than ``retention`` go a whole partition (or TimescaleDB chunk) at a
time, never row by row; rollup rows older than ``rollup_retention`` go separately, never where
readings remain. What summarizes the readings (tsapi_sensors, the rollup log) is brought into
line in the same transaction, so that answers stay those of the readings that are left.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from tsapi.db import Connection
from tsapi.durations import format_duration
from tsapi.errors import ApiError
from tsapi.ingest import MAX_REPORTED_ERRORS, Batch
from tsapi.invalidations import NOTIFY_SQL
from tsapi.rollups import LOCK_KEY as REFRESH_LOCK
from tsapi.storage import Layout

log = structlog.get_logger(__name__)

LOCK_TIMEOUT = "2s"  # a drop waiting longer (on a long export) tries again next round


@dataclass(frozen=True)
class Dropped:
    names: list[str]
    boundary: datetime  # readings before it are gone


_EXPIRED_PARTITIONS = """
    SELECT c.oid::regclass::text AS name, p.upper
    FROM tsapi_partitions p JOIN pg_class c ON c.relname = p.name
    JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'readings'::regclass
    WHERE p.upper <= $1 ORDER BY p.upper"""
_EXPIRED_CHUNKS = """
    SELECT format('%I.%I', chunk_schema, chunk_name) AS name, range_end AS upper
    FROM timescaledb_information.chunks
    WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
      AND range_end <= $1 ORDER BY range_end"""

# Per sensor whose earliest summarized reading is gone: the count of the finest rollup's buckets
# from the boundary on, and its earliest remaining reading; a sensor whose last reading is gone
# (or with nothing summarized left) loses its row: the readings left, if any, are read as the
# newest ones are, until the refresher summarizes them again.
_RESUMMARIZE = """
    WITH kept AS (
        SELECT s.sensor, s.last_ts,
               (SELECT sum(r.count) FROM tsapi_rollup r
                WHERE r.width_s = $2 AND r.sensor = s.sensor AND r.bucket >= $3) AS count,
               (SELECT min(ts) FROM readings WHERE sensor = s.sensor) AS first_ts
        FROM tsapi_sensors s WHERE s.first_ts < $1
    ), gone AS (
        DELETE FROM tsapi_sensors s USING kept k
        WHERE s.sensor = k.sensor AND (k.last_ts < $1 OR k.count IS NULL OR k.first_ts IS NULL)
    )
    UPDATE tsapi_sensors s SET count = k.count, first_ts = k.first_ts FROM kept k
    WHERE s.sensor = k.sensor AND k.last_ts >= $1 AND k.count IS NOT NULL
      AND k.first_ts IS NOT NULL"""


async def drop_expired(conn: Connection, layout: Layout, retention: timedelta) -> Dropped | None:
    """Drop the partitions or chunks wholly older than now() - retention; what was dropped."""
    if layout is Layout.PLAIN:
        return None  # an adopted, unpartitioned table: only row deletes could trim it
    async with conn.transaction():
        # Not while the rollup refresher materializes: the rollup log is rewritten here.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", REFRESH_LOCK)
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        cutoff = await conn.fetchval("SELECT now() - $1::interval", retention)
        if layout is Layout.PARTITIONED:
            expired = await conn.fetch(_EXPIRED_PARTITIONS, cutoff)
            for row in expired:
                await conn.execute(f"DROP TABLE {row['name']}")
        else:
            expired = await conn.fetch(_EXPIRED_CHUNKS, cutoff)
            if expired:
                await conn.execute(
                    "SELECT drop_chunks('readings', older_than => $1::timestamptz)", cutoff
                )
        if not expired:
            return None
        boundary: datetime = max(row["upper"] for row in expired)
        await _resummarize(conn, boundary)
        await conn.execute(NOTIFY_SQL)  # cached answers may hold dropped readings
    dropped = Dropped([row["name"] for row in expired], boundary)
    log.info("retention dropped readings", count=len(dropped.names), before=str(boundary))
    return dropped


async def _resummarize(conn: Connection, boundary: datetime) -> None:
    finest = await conn.fetchval("SELECT min(width_s) FROM tsapi_rollup_state")
    if finest is None:
        return  # no rollups: nothing summarizes the readings
    # Late rows logged before the boundary are gone: their buckets must not be recomputed,
    # which would empty the rollups kept for them.
    await conn.execute("DELETE FROM tsapi_rollup_log WHERE hi < $1", boundary)
    await conn.execute("UPDATE tsapi_rollup_log SET lo = $1 WHERE lo < $1", boundary)
    start = await conn.fetchval(
        "SELECT date_bin(make_interval(secs => $1), $2, '0001-01-01 00:00:00+00')",
        finest,
        boundary,
    )
    if start < boundary:
        # A finest bucket straddles the boundary (partitions not aligned on its width): it is
        # recomputed from the readings left, like a bucket late rows were written into.
        await conn.execute(
            "INSERT INTO tsapi_rollup_log (lo, hi) VALUES ($1, $2)",
            boundary,
            start + timedelta(seconds=finest) - timedelta(microseconds=1),
        )
    await conn.execute(_RESUMMARIZE, boundary, finest, start)


_OLDEST_READING = {
    Layout.PARTITIONED: "SELECT min(lower) FROM tsapi_partitions",
    Layout.HYPERTABLE: """SELECT min(range_start) FROM timescaledb_information.chunks
                          WHERE hypertable_schema = current_schema()
                            AND hypertable_name = 'readings'""",
    Layout.PLAIN: "SELECT min(ts) FROM readings",
}


async def kept_since(conn: Connection, layout: Layout) -> datetime | None:
    """Where the readings kept begin: those older than the oldest partition or chunk were
    dropped whole (by retention, or by hand) and only rollups are left of them. None for a
    plain table, which loses no period whole."""
    if layout is Layout.PLAIN:
        return None
    oldest: datetime | None = await conn.fetchval(_OLDEST_READING[layout])
    return datetime.max.replace(tzinfo=UTC) if oldest is None else oldest


async def drop_old_rollups(conn: Connection, layout: Layout, keep: timedelta) -> int:
    """Delete rollup buckets wholly older than now() - keep, and older than every reading kept
    (so that rollups never hide readings); how many."""
    async with conn.transaction():
        oldest = await conn.fetchval(_OLDEST_READING[layout])
        deleted = 0
        for table in ("tsapi_rollup", "tsapi_rollup_all"):  # per sensor, and across them
            status = await conn.execute(
                f"""DELETE FROM {table}
                    WHERE bucket + make_interval(secs => width_s)
                          <= least(now() - $1::interval, coalesce($2::timestamptz, 'infinity'))""",  # noqa: S608
                keep,
                oldest,
            )
            deleted += int(status.split()[-1])
        if deleted:
            await conn.execute(NOTIFY_SQL)  # aggregates over those buckets change
    if deleted:
        log.info("rollup retention deleted rollup rows", count=deleted)
    return deleted


def refuse_expired(body: bytes, batch: Batch, retention: timedelta | None) -> None:
    """A 422 naming the readings older than the retention period: they would be dropped at
    once, and writing them would recreate partitions and rollups that retention removed."""
    if retention is None or not batch.timed:
        return
    cutoff = datetime.now(UTC) - retention
    if min(row[0] for row in batch.timed) >= cutoff:
        return
    # The batch's timed readings are the body's readings that have a ts, in order.
    decoded = msgspec.json.decode(body)
    rows = decoded if isinstance(decoded, list) else [decoded]
    timed_rows = [index for index, row in enumerate(rows) if row.get("ts") is not None]
    reason = f"is older than the retention period ({format_duration(retention)})"
    errors = [
        {"row": index, "field": "ts", "reason": reason}
        for index, reading in zip(timed_rows, batch.timed, strict=True)
        if reading[0] < cutoff
    ]
    raise ApiError(
        422,
        f"{len(errors)} reading(s) older than the retention period; nothing was written",
        errors=errors[:MAX_REPORTED_ERRORS],
    )
