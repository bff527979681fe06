"""Aggregates per time bucket: the query's parameters, and the SQL that merges rollup rows with
readings so that answers equal those computed from the raw rows alone."""

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tsapi.buckets import Segment
from tsapi.instants import Instant
from tsapi.sqlbuilder import SqlBuilder

_MICROSECOND = timedelta(microseconds=1)
FUNCTIONS = ("avg", "min", "max", "sum", "count", "first", "last")
FILLS = ("none", "null", "previous", "linear")

# The partial aggregates each function is merged from, and how.
_PARTIALS = {
    "count": ("count",),
    "sum": ("sum",),
    "avg": ("count", "sum"),
    "min": ("min",),
    "max": ("max",),
    "first": ("first_ts", "first_value"),
    "last": ("last_ts", "last_value"),
}
_FROM_READINGS = {
    "count": "count(*)",
    "sum": "sum(value)",
    "min": "min(value)",
    "max": "max(value)",
    "first_ts": "min(ts)",
    "first_value": "(array_agg(value ORDER BY ts, value))[1]",
    "last_ts": "max(ts)",
    "last_value": "(array_agg(value ORDER BY ts DESC, value DESC))[1]",
}
_MERGED = {
    "count": "sum(count)::bigint",
    "sum": "sum(sum)",
    "avg": "sum(sum) / sum(count)",  # what avg() itself computes: the same numeric division
    "min": "min(min)",
    "max": "max(max)",
    "first": "(array_agg(first_value ORDER BY first_ts, first_value))[1]",
    "last": "(array_agg(last_value ORDER BY last_ts DESC, last_value DESC))[1]",
}


@dataclass(frozen=True)
class AggregateQuery:
    bucket: timedelta
    functions: tuple[str, ...]
    by_sensor: bool
    fill: str
    tz: ZoneInfo | None = None  # None: UTC
    sensors: tuple[uuid.UUID, ...] = ()
    metadata: bytes | None = None  # a JSON object the readings' metadata must contain
    start: Instant | None = None
    end: Instant | None = None

    @property
    def relative(self) -> bool:
        return isinstance(self.start, timedelta) or isinstance(self.end, timedelta)

    def partials(self) -> list[str]:
        return list(dict.fromkeys(p for fn in self.functions for p in _PARTIALS[fn]))


def bucket_expression(sql: SqlBuilder, query: AggregateQuery, column: str) -> str:
    """The start of the query bucket holding ``column``, aligned on 0001-01-01 (a Monday),
    in local time when a zone is given."""
    width = sql.arg(query.bucket, "::interval")
    if query.tz is None:
        return f"date_bin({width}, {column}, timestamptz '0001-01-01 00:00:00+00')"
    zone = sql.arg(query.tz.key, "::text")
    return (
        f"(date_bin({width}, {column} AT TIME ZONE {zone}, timestamp '0001-01-01')"
        f" AT TIME ZONE {zone})"
    )


def aggregate_sql(
    sql: SqlBuilder, query: AggregateQuery, segments: list[Segment], check: str | None = None
) -> str:
    """The aggregate's SQL; with a ``check``, no rows unless that condition holds."""
    partials = query.partials()
    parts = [_segment_sql(sql, query, segment, partials) for segment in segments]
    group = "sensor, bucket" if query.by_sensor else "bucket"
    merged = ", ".join(f"{_MERGED[fn]} AS {fn}" for fn in query.functions)
    having = "" if check is None else f"HAVING ({check}) "
    return (
        f"SELECT {group}, {merged} FROM ({' UNION ALL '.join(parts)}) AS parts "  # noqa: S608
        f"GROUP BY {group} {having}ORDER BY {group}"
    )


def _segment_sql(
    sql: SqlBuilder, query: AggregateQuery, segment: Segment, partials: list[str]
) -> str:
    if segment.width is None:
        filters = [f"ts >= {sql.arg(segment.lo)}", f"ts < {sql.arg(segment.hi)}"]
        filters += _filters(sql, query)
        columns = ", ".join(f"{_FROM_READINGS[p]} AS {p}" for p in partials)
        bucket = bucket_expression(sql, query, "ts")
        # Across sensors, one partial per bucket: per sensor, a thousand sensors made a thousand
        # partials of each bucket to sort and merge (a third of the per-minute average's time).
        sensor, group = ("sensor", "sensor, 2") if query.by_sensor else ("NULL::uuid", "2")
        return (
            f"SELECT {sensor} AS sensor, {bucket} AS bucket, {columns} FROM readings "  # noqa: S608
            f"WHERE sensor IS NOT NULL AND {' AND '.join(filters)} GROUP BY {group}"
        )
    filters = [
        f"width_s = {sql.arg(int(segment.width.total_seconds()))}",
        f"bucket >= {sql.arg(segment.lo)}",
        f"bucket < {sql.arg(segment.hi)}",
    ]
    if query.sensors:
        filters.append(sql.sensor_in(query.sensors))
    # Across every sensor, the fleet-wide rollup has one row per bucket instead of one per sensor.
    fleet = not query.by_sensor and not query.sensors
    table, sensor = ("tsapi_rollup_all", "NULL::uuid") if fleet else ("tsapi_rollup", "sensor")
    bucket = bucket_expression(sql, query, "bucket")
    return (
        f"SELECT {sensor} AS sensor, {bucket} AS bucket, {', '.join(partials)} "  # noqa: S608
        f"FROM {table} WHERE {' AND '.join(filters)}"
    )


def _filters(sql: SqlBuilder, query: AggregateQuery) -> list[str]:
    filters = []
    if query.sensors:
        filters.append(sql.sensor_in(query.sensors))
    if query.metadata is not None:
        filters.append(f"metadata @> {sql.arg(query.metadata, '::jsonb')}")
    return filters


def bucket_series_sql(
    query: AggregateQuery, start: datetime, end: datetime
) -> tuple[str, list[object]]:
    """Every bucket start in [start, end), for gap filling."""
    sql = SqlBuilder()
    first = bucket_expression(sql, query, sql.arg(start, "::timestamptz"))
    width = sql.arg(query.bucket, "::interval")
    stop = sql.arg(end, "::timestamptz")
    if query.tz is None:
        text = (
            f"SELECT DISTINCT g FROM generate_series({first}, {stop}, {width}) AS g "  # noqa: S608
            f"WHERE g < {stop} ORDER BY g"
        )
    else:
        zone = sql.arg(query.tz.key, "::text")
        text = (
            f"SELECT DISTINCT g AT TIME ZONE {zone} AS g "  # noqa: S608
            f"FROM generate_series({first} AT TIME ZONE {zone}, {stop} AT TIME ZONE {zone}, "
            f"{width}) AS g "
            f"WHERE g AT TIME ZONE {zone} < {stop} ORDER BY 1"
        )
    return text, sql.args


def fill_gaps(
    rows: list[dict[str, Any]], buckets: list[datetime], query: AggregateQuery
) -> list[dict[str, Any]]:
    """One row per bucket per group; missing values filled as the query asks."""
    groups: dict[Any, dict[datetime, dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get("sensor"), {})[row["bucket"]] = row
    for sensor in query.sensors if query.by_sensor else ():
        groups.setdefault(sensor, {})
    if not query.by_sensor:
        groups.setdefault(None, {})
    filled = []
    for sensor in sorted(groups, key=str):
        known = groups[sensor]
        series = []
        for bucket in buckets:
            row = dict(known.get(bucket) or {"bucket": bucket})
            if query.by_sensor:
                row["sensor"] = sensor
            series.append(row)
        for fn in query.functions:
            _fill_column(series, fn, query.fill)
        filled += series
    return filled


def _fill_column(series: list[dict[str, Any]], fn: str, how: str) -> None:
    if fn == "count":  # an empty bucket counts zero readings: a fact, not a guess
        for row in series:
            row.setdefault("count", 0)
        return
    known = [(i, row[fn]) for i, row in enumerate(series) if row.get(fn) is not None]
    for row in series:
        row.setdefault(fn, None)
    if how == "previous":
        last = None
        for row in series:
            if row[fn] is None:
                row[fn] = last
            last = row[fn]
    elif how == "linear":
        for (i0, v0), (i1, v1) in itertools.pairwise(known):
            t0, t1 = series[i0]["bucket"], series[i1]["bucket"]
            span = Decimal((t1 - t0) // _MICROSECOND)
            for i in range(i0 + 1, i1):
                elapsed = Decimal((series[i]["bucket"] - t0) // _MICROSECOND)
                series[i][fn] = v0 + (v1 - v0) * elapsed / span  # exact where it can be
