"""Compression of old TimescaleDB chunks: columnar, segmented by sensor and ordered by time within
each segment, so that a sensor's readings of a chunk are stored (and read) together. Queries are
unchanged: TimescaleDB decompresses what they read. Plain PostgreSQL has no equivalent.
"""

from datetime import timedelta

import structlog

from tsapi.db import Connection
from tsapi.storage import Layout

log = structlog.get_logger(__name__)

_LOCK_KEY = 7_362_914_003  # one compressing process at a time
LOCK_TIMEOUT = "2s"  # a chunk busy longer is compressed next round


async def enable(conn: Connection) -> None:
    """Declare how readings are compressed, once."""
    enabled = await conn.fetchval(
        """SELECT compression_enabled FROM timescaledb_information.hypertables
           WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"""
    )
    if not enabled:
        await conn.execute(
            """ALTER TABLE readings SET (timescaledb.compress,
                   timescaledb.compress_segmentby = 'sensor',
                   timescaledb.compress_orderby = 'ts DESC')"""
        )
        log.info("compression enabled on readings", segment_by="sensor")


async def compress_old(conn: Connection, layout: Layout, after: timedelta) -> int:
    """Compress the chunks wholly older than now() - after that are not yet (or no longer
    wholly, after late writes); how many."""
    if layout is not Layout.HYPERTABLE:
        return 0
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        return 0
    try:
        await enable(conn)
        chunks = await conn.fetch(
            """SELECT format('%I.%I', chunk_schema, chunk_name) AS name
               FROM timescaledb_information.chunks
               WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
                 AND range_end <= now() - $1::interval
                 AND (NOT is_compressed OR _timescaledb_functions.chunk_status(
                          format('%I.%I', chunk_schema, chunk_name)::regclass) & 8 <> 0)
               ORDER BY range_start""",
            after,
        )
        for chunk in chunks:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute(
                    "SELECT compress_chunk($1::regclass, if_not_compressed => true)", chunk["name"]
                )
        if chunks:
            log.info("compressed chunks", count=len(chunks))
        return len(chunks)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
