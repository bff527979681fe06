"""Optional de-duplication of readings on (sensor, ts), per deployment (the ``dedupe`` setting).

Off (the default, as in the tutorial), readings are copied in as they come, duplicates included.
With ``skip`` or ``replace``, readings has a unique index on (sensor, ts) and batches are written
with INSERT ... ON CONFLICT: a reading for a sensor and instant already stored is left out, or
replaces the stored one's value and metadata. Within one batch, rows for the same sensor and
instant collapse first: the first one is kept by ``skip``, the last one by ``replace``.
"""

import contextlib
from collections.abc import Iterator
from typing import Literal

import asyncpg

from tsapi.db import Connection
from tsapi.errors import ApiError
from tsapi.ingest import Batch

Mode = Literal["off", "skip", "replace"]

INDEX = "readings_sensor_ts_key"
# The unique key holds sensor and ts, as Citus (distributed on sensor), TimescaleDB and native
# partitions (on ts) all require.
_INDEX_SQL = f"CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON readings (sensor, ts)"
FIND_DUPLICATES = (
    "SELECT sensor, ts, count(*) FROM readings GROUP BY sensor, ts HAVING count(*) > 1"
)

_ACTIONS = {
    "skip": ("ASC", "NOTHING"),
    "replace": ("DESC", "UPDATE SET metadata = excluded.metadata, value = excluded.value"),
}
# The ORDER BY picks which of a batch's duplicates DISTINCT ON keeps: the first, or the last.
_TIMED_SQL = """
INSERT INTO readings (ts, sensor, metadata, value)
SELECT DISTINCT ON (sensor, ts) ts, sensor, metadata, value
FROM unnest($1::timestamptz[], $2::uuid[], $3::jsonb[], $4::numeric[])
    WITH ORDINALITY AS r(ts, sensor, metadata, value, n)
ORDER BY sensor, ts, n {direction}
ON CONFLICT (sensor, ts) DO {action}"""
# Untimed rows all take now(): within a batch, those of one sensor are duplicates.
_UNTIMED_SQL = """
INSERT INTO readings (ts, sensor, metadata, value)
SELECT DISTINCT ON (sensor) now(), sensor, metadata, value
FROM unnest($1::uuid[], $2::jsonb[], $3::numeric[]) WITH ORDINALITY AS r(sensor, metadata, value, n)
ORDER BY sensor, n {direction}
ON CONFLICT (sensor, ts) DO {action}"""


class DuplicateReadings(RuntimeError):
    """readings already holds duplicates, so the unique index dedupe needs cannot be made."""


async def ensure_unique_index(conn: Connection) -> None:
    """The unique index on readings (sensor, ts), made unless it exists (which, on a large
    table, blocks writes to it while it is built)."""
    try:
        async with conn.transaction():
            await conn.execute(_INDEX_SQL)
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateReadings(
            "dedupe needs a unique index on readings (sensor, ts), but readings already holds"
            f" more than one reading for a sensor and instant ({exc.detail or exc}). Find them"
            f" with: {FIND_DUPLICATES}; then delete the extra rows, or set dedupe = off"
        ) from None


async def insert(conn: Connection, batch: Batch, mode: Mode) -> int:
    """Write the batch skipping or replacing duplicates; the rows inserted or replaced (a
    replaced row counts even where its value was the same)."""
    direction, action = _ACTIONS[mode]
    written = 0
    if batch.timed:
        ts, sensors, metadata, values = zip(*batch.timed, strict=True)
        status = await conn.execute(
            _TIMED_SQL.format(direction=direction, action=action),
            list(ts),
            list(sensors),
            list(metadata),
            list(values),
        )
        written += _count(status)
    if batch.untimed:
        sensors, metadata, values = zip(*batch.untimed, strict=True)
        status = await conn.execute(
            _UNTIMED_SQL.format(direction=direction, action=action),
            list(sensors),
            list(metadata),
            list(values),
        )
        written += _count(status)
    return written


@contextlib.contextmanager
def refusing_duplicates() -> Iterator[None]:
    """A 409 rather than a 500 when dedupe is off but readings has a unique index that a
    reading breaks (one left by an earlier dedupe setting, or made by hand)."""
    try:
        yield
    except asyncpg.UniqueViolationError:
        raise ApiError(
            409,
            "a reading for this sensor and instant is already stored, and readings has a unique"
            " index on (sensor, ts); nothing was written. Set dedupe = skip or replace to write"
            " such batches",
        ) from None


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
