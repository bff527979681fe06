"""What is known per sensor (counts, first and last readings) and the latest reading of many
sensors at once. tsapi_sensors holds this for the rows the finest rollup has materialized; the
rest (the newest rows, and rows written late) is read from readings, so answers are exact."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from tsapi import snapshots
from tsapi.buckets import Span
from tsapi.db import Connection
from tsapi.query import COLUMNS
from tsapi.rollups import bucket_start
from tsapi.sqlbuilder import SqlBuilder

_EARLIEST = datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)  # before any storable reading


@dataclass(frozen=True)
class SensorFilter:
    sensors: tuple[uuid.UUID, ...] = ()
    metadata: bytes | None = None
    after: uuid.UUID | None = None
    limit: int | None = None


# The finest rollup's width, how far it is materialized and the ranges written late before that:
# the rollup state the summary rests on. One row, or none without rollups.
_STATE = (
    "width_s, materialized,"
    " ARRAY(SELECT lo FROM tsapi_rollup_log WHERE lo < materialized ORDER BY lo, hi),"
    " ARRAY(SELECT hi FROM tsapi_rollup_log WHERE lo < materialized ORDER BY lo, hi)"
)
_STATE_TYPES = ("integer", "timestamptz", "timestamptz[]", "timestamptz[]")
_STATE_ROW = "FROM tsapi_rollup_state ORDER BY width_s LIMIT 1"


@dataclass(frozen=True)
class _Unmaterialized:
    """Where the summary is not to be trusted: from ``tail`` on, and the ``late`` spans."""

    width: timedelta | None
    tail: datetime
    late: list[Span]
    state: tuple[object, ...] | None  # the rollup state as read, None for none


async def _unmaterialized(conn: Connection) -> _Unmaterialized:
    state = await conn.fetchrow(f"SELECT {_STATE} {_STATE_ROW}")
    if state is None:  # no rollups: everything is read from readings
        return _Unmaterialized(None, _EARLIEST, [], None)
    width_s, tail, lows, highs = state
    width = timedelta(seconds=width_s)
    # Whole buckets of the finest rollup, as recomputing them will replace them.
    late = [
        (bucket_start(lo, width), min(bucket_start(hi, width) + width, tail))
        for lo, hi in zip(lows, highs, strict=True)
    ]
    return _Unmaterialized(width, tail, _merge(late), tuple(state))


def _still(sql: SqlBuilder, fresh: _Unmaterialized) -> str:
    """The condition that the rollup state is still the one ``fresh`` was read from."""
    current = f"(SELECT ROW({_STATE}) {_STATE_ROW})"
    if fresh.state is None:
        return snapshots.unchanged(current, "NULL")
    was = ", ".join(
        sql.arg(value, f"::{kind}") for value, kind in zip(fresh.state, _STATE_TYPES, strict=True)
    )
    return snapshots.unchanged(current, f"ROW({was})")


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _raw_window(sql: SqlBuilder, fresh: _Unmaterialized, column: str) -> str:
    spans = [f"{column} >= {sql.arg(fresh.tail)}"] + [
        f"({column} >= {sql.arg(lo)} AND {column} < {sql.arg(hi)})" for lo, hi in fresh.late
    ]
    return f"({' OR '.join(spans)})"


def _sensor_filter(sql: SqlBuilder, query: SensorFilter, column: str = "sensor") -> str:
    filters = [f"{column} IS NOT NULL"]
    if query.sensors:
        filters.append(sql.sensor_in(query.sensors, column))
    if query.after is not None:
        filters.append(f"{column} > {sql.arg(query.after, '::uuid')}")
    return " AND ".join(filters)


async def summaries(conn: Connection, query: SensorFilter) -> list[asyncpg.Record]:
    """Per sensor: count, first_ts, last_ts, last_value and the last reading's metadata."""
    return await _read(conn, query, _summaries_sql)


async def latest(conn: Connection, query: SensorFilter) -> list[asyncpg.Record]:
    """The newest reading of each sensor (the one with the greatest value among ties). The
    summary's last reading competes with the readings it does not cover yet."""
    return await _read(conn, query, _latest_sql)


_Sql = Callable[[SqlBuilder, SensorFilter, _Unmaterialized, str | None], str]


async def _read(conn: Connection, query: SensorFilter, write_sql: _Sql) -> list[asyncpg.Record]:
    """The rows of the SQL written for what the rollup state leaves unmaterialized: the state
    read by one statement, the rows by another that checks it still holds (see snapshots)."""

    async def read(checked: bool) -> list[asyncpg.Record] | None:
        fresh = await _unmaterialized(conn)
        sql = SqlBuilder()
        check = _still(sql, fresh) if checked else None
        rows = await conn.fetch(write_sql(sql, query, fresh, check), *sql.args)
        return None if checked and not rows else rows

    return await snapshots.read_consistently(conn, read)


def _summaries_sql(
    sql: SqlBuilder, query: SensorFilter, fresh: _Unmaterialized, check: str | None
) -> str:
    parts = [
        "SELECT sensor, count, first_ts, last_ts, last_value, metadata FROM tsapi_sensors "  # noqa: S608
        f"WHERE {_sensor_filter(sql, query)}"
    ]
    if fresh.width is not None and fresh.late:
        # Rollup rows about to be recomputed: their counts are replaced by the readings'.
        stale = " OR ".join(
            f"(bucket >= {sql.arg(lo)} AND bucket < {sql.arg(hi)})" for lo, hi in fresh.late
        )
        parts.append(
            "SELECT sensor, -count, NULL, NULL, NULL, NULL FROM tsapi_rollup "  # noqa: S608
            f"WHERE width_s = {sql.arg(int(fresh.width.total_seconds()))} AND ({stale}) "
            f"AND {_sensor_filter(sql, query)}"
        )
    parts.append(
        "SELECT sensor, count(*), min(ts), max(ts), "  # noqa: S608
        "(array_agg(value ORDER BY ts DESC, value DESC))[1], "
        "(array_agg(metadata ORDER BY ts DESC, value DESC))[1] FROM readings "
        f"WHERE {_raw_window(sql, fresh, 'ts')} AND {_sensor_filter(sql, query)} "
        "GROUP BY sensor"
    )
    last = "ORDER BY last_ts DESC, last_value DESC, metadata::text"
    text = (
        "SELECT sensor, sum(count)::bigint AS count, min(first_ts) AS first_ts, "  # noqa: S608
        "max(last_ts) AS last_ts, "
        f"(array_agg(last_value {last}) FILTER (WHERE last_ts IS NOT NULL))[1] AS last_value, "
        f"(array_agg(metadata {last}) FILTER (WHERE last_ts IS NOT NULL))[1] AS metadata "
        f"FROM ({' UNION ALL '.join(parts)}) AS parts GROUP BY sensor"
    )
    conditions = ["count > 0"]
    if query.metadata is not None:
        conditions.append(f"metadata @> {sql.arg(query.metadata, '::jsonb')}")
    if check is not None:
        conditions.append(f"({check})")
    text = f"SELECT * FROM ({text}) AS s WHERE {' AND '.join(conditions)} ORDER BY sensor"  # noqa: S608
    if query.limit is not None:
        text += f" LIMIT {sql.arg(query.limit)}"
    return text


def _latest_sql(
    sql: SqlBuilder, query: SensorFilter, fresh: _Unmaterialized, check: str | None
) -> str:
    # Printed as GET /readings prints, once a sensor's latest is chosen.
    return (
        f"SELECT {COLUMNS} FROM ("  # noqa: S608
        "SELECT DISTINCT ON (sensor) ts, sensor, metadata, value FROM ("
        "SELECT last_ts AS ts, sensor, metadata, last_value AS value FROM tsapi_sensors "
        f"WHERE {_sensor_filter(sql, query)} "
        "UNION ALL SELECT ts, sensor, metadata, value FROM readings "
        f"WHERE {_raw_window(sql, fresh, 'ts')} AND {_sensor_filter(sql, query)}"
        ") AS candidates ORDER BY sensor, ts DESC, value DESC, metadata::text"
        f") AS latest {'' if check is None else f'WHERE ({check}) '}ORDER BY sensor"
    )
