"""What is known per sensor (counts, first and last readings) and the latest reading of many
sensors at once. tsapi_sensors holds this for the rows the finest rollup has materialized; the
rest (the newest rows, and rows written late) is read from readings, so answers are exact."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

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


@dataclass(frozen=True)
class _Unmaterialized:
    """Where the summary is not to be trusted: from ``tail`` on, and the ``late`` spans."""

    width: timedelta | None
    tail: datetime
    late: list[Span]


async def _unmaterialized(conn: Connection) -> _Unmaterialized:
    state = await conn.fetchrow(
        "SELECT width_s, materialized FROM tsapi_rollup_state ORDER BY width_s LIMIT 1"
    )
    if state is None:  # no rollups: everything is read from readings
        return _Unmaterialized(None, _EARLIEST, [])
    width, tail = timedelta(seconds=state["width_s"]), state["materialized"]
    # Whole buckets of the finest rollup, as recomputing them will replace them.
    late = [
        (bucket_start(row["lo"], width), min(bucket_start(row["hi"], width) + width, tail))
        for row in await conn.fetch("SELECT lo, hi FROM tsapi_rollup_log WHERE lo < $1", tail)
    ]
    return _Unmaterialized(width, tail, _merge(late))


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
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        fresh = await _unmaterialized(conn)
        sql = SqlBuilder()
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
        where = " AND ".join(conditions)
        text = f"SELECT * FROM ({text}) AS s WHERE {where} ORDER BY sensor"  # noqa: S608
        if query.limit is not None:
            text += f" LIMIT {sql.arg(query.limit)}"
        return await conn.fetch(text, *sql.args)


async def latest(conn: Connection, query: SensorFilter) -> list[asyncpg.Record]:
    """The newest reading of each sensor (the one with the greatest value among ties). The
    summary's last reading competes with the readings it does not cover yet."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        fresh = await _unmaterialized(conn)
        sql = SqlBuilder()
        # Printed as GET /readings prints, once a sensor's latest is chosen.
        text = (
            f"SELECT {COLUMNS} FROM ("  # noqa: S608
            "SELECT DISTINCT ON (sensor) ts, sensor, metadata, value FROM ("
            "SELECT last_ts AS ts, sensor, metadata, last_value AS value FROM tsapi_sensors "
            f"WHERE {_sensor_filter(sql, query)} "
            "UNION ALL SELECT ts, sensor, metadata, value FROM readings "
            f"WHERE {_raw_window(sql, fresh, 'ts')} AND {_sensor_filter(sql, query)}"
            ") AS candidates ORDER BY sensor, ts DESC, value DESC, metadata::text"
            ") AS latest ORDER BY sensor"
        )
        return await conn.fetch(text, *sql.args)
