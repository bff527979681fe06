"""GET /readings/aggregate: validating its parameters and answering it inside one snapshot."""

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.datastructures import QueryParams

from tsapi.aggregate import (
    FILLS,
    FUNCTIONS,
    AggregateQuery,
    aggregate_sql,
    bucket_series_sql,
    fill_gaps,
)
from tsapi.buckets import plan, usable_widths
from tsapi.containment import parse_containment
from tsapi.db import Connection
from tsapi.durations import format_duration, parse_duration
from tsapi.errors import ApiError
from tsapi.ingest import TS_RANGE_REASON
from tsapi.instants import parse_instant, resolve
from tsapi.query import parse_sensors
from tsapi.sqlbuilder import SqlBuilder

_ONE_MICROSECOND = timedelta(microseconds=1)
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
_LAST_INSTANT = datetime.max.replace(tzinfo=UTC)
MAX_BUCKET = timedelta(weeks=1_000_000)  # some 19,000 years


def parse_aggregate_query(params: QueryParams, max_points: int) -> AggregateQuery:
    raw_bucket = params.get("bucket")
    if raw_bucket is None:
        raise ApiError(400, "'bucket' is required, e.g. bucket=1h", parameter="bucket")
    try:
        bucket = parse_duration(raw_bucket)
    except ValueError as exc:
        raise ApiError(400, f"'bucket': {exc}", parameter="bucket") from None
    if bucket > MAX_BUCKET:  # wider than the calendar, and than PostgreSQL's date_bin takes
        raise ApiError(
            400, f"'bucket' must be at most {format_duration(MAX_BUCKET)}", parameter="bucket"
        )
    functions = _choices("fn", params.getlist("fn"), FUNCTIONS) or ("avg",)  # fn= too
    group = _choice("group", params.get("group", "sensor"), ("sensor", "none"))
    fill = _choice("fill", params.get("fill", "none"), FILLS)
    start = parse_instant("from", params.get("from"))
    end = parse_instant("to", params.get("to"))
    if isinstance(start, datetime) and isinstance(end, datetime):
        check_range(start, end, bucket, max_points)  # refused before any database work
    return AggregateQuery(
        bucket=bucket,
        functions=functions,
        by_sensor=group == "sensor",
        fill=fill,
        tz=_parse_zone(params.get("tz")),
        sensors=parse_sensors(params.getlist("sensor")),
        metadata=parse_containment("metadata", params.get("metadata")),
        start=start,
        end=end,
    )


def check_range(start: datetime, end: datetime, bucket: timedelta, max_points: int) -> None:
    if start >= end:
        raise ApiError(400, "'from' must be earlier than 'to'", parameter="from")
    # asyncpg sends these two instants as -infinity and infinity, which no bucket can hold.
    for name, instant in (("from", start), ("to", end)):
        if instant in (_FIRST_INSTANT, _LAST_INSTANT):
            raise ApiError(400, f"'{name}' {TS_RANGE_REASON}", parameter=name)
    points = math.ceil((end - start) / bucket)
    if points > max_points:
        raise ApiError(
            400,
            f"'bucket' {bucket} over that range makes {points} buckets; the most is {max_points}:"
            " use a wider bucket or a shorter range",
            parameter="bucket",
        )


def _choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    chosen = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for value in chosen:
        if value not in allowed:
            raise ApiError(
                400, f"'{name}' must be one of {', '.join(allowed)}, not {value!r}", parameter=name
            )
    return tuple(dict.fromkeys(chosen))


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``; an empty value is none of them."""
    value = value.strip()
    if value not in allowed:
        raise ApiError(
            400, f"'{name}' must be one of {', '.join(allowed)}, not {value!r}", parameter=name
        )
    return value


def _parse_zone(raw: str | None) -> ZoneInfo | None:
    if raw is None or raw.upper() in ("UTC", "Z", "ETC/UTC"):
        return None
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(
            400, f"'tz' must be an IANA time zone, not {raw!r}", parameter="tz"
        ) from None


async def _extent(
    conn: Connection, sensors: Sequence[uuid.UUID], start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """from and to, a missing one being where the readings (of ``sensors``, if given) start or
    end, or None if none is in range. Only a missing bound is looked for, within the given one:
    over every partition, looking costs more than the rest of the answer once there are hundreds."""
    sql = SqlBuilder()
    conditions = [sql.sensor_in(sensors) if sensors else "sensor IS NOT NULL"]
    if start is not None:
        conditions.append(f"ts >= {sql.arg(start)}")
    if end is not None:
        conditions.append(f"ts < {sql.arg(end)}")
    row = await conn.fetchrow(
        f"SELECT {'min(ts)' if start is None else 'NULL'}, {'max(ts)' if end is None else 'NULL'}"  # noqa: S608
        f" FROM readings WHERE {' AND '.join(conditions)}",
        *sql.args,
    )
    assert row is not None
    first, last = row
    if end is None and last is not None:
        end = last + _ONE_MICROSECOND
    return (first if start is None else start), end


async def _snapshot_state(
    conn: Connection, relative: bool, rollups: bool
) -> tuple[datetime | None, dict[timedelta, datetime], list[tuple[datetime, datetime]]]:
    """The snapshot's now() if ``relative`` bounds need it, and, if ``rollups`` may answer, how
    far each width is materialized and the time ranges written late since: in one round trip,
    rather than one for each."""
    if not rollups:
        return (await conn.fetchval("SELECT now()") if relative else None), {}, []
    row = await conn.fetchrow(
        "SELECT now(), ARRAY(SELECT width_s FROM tsapi_rollup_state ORDER BY width_s),"
        " ARRAY(SELECT materialized FROM tsapi_rollup_state ORDER BY width_s),"
        " ARRAY(SELECT lo FROM tsapi_rollup_log ORDER BY lo, hi),"
        " ARRAY(SELECT hi FROM tsapi_rollup_log ORDER BY lo, hi)"
    )
    assert row is not None
    now, width_s, materialized, lows, highs = row
    return (
        now,
        {timedelta(seconds=s): at for s, at in zip(width_s, materialized, strict=True)},
        list(zip(lows, highs, strict=True)),
    )


async def run_aggregate(
    conn: Connection, query: AggregateQuery, widths: Sequence[timedelta], max_points: int
) -> list[dict[str, Any]]:
    try:
        return await _run_aggregate(conn, query, widths, max_points)
    except OverflowError:
        if query.tz is None:
            raise
        # Local buckets near 0001-01-01 or 9999-12-31 can start or end beyond them in UTC,
        # where no datetime exists.
        raise ApiError(
            400,
            f"in time zone {query.tz.key}, buckets over this range reach beyond 0001-01-01"
            " or 9999-12-31 (UTC); use a range further from those ends, or tz=UTC",
            parameter="tz",
        ) from None


async def _run_aggregate(
    conn: Connection, query: AggregateQuery, widths: Sequence[timedelta], max_points: int
) -> list[dict[str, Any]]:
    # One snapshot: the rollup state, the late-write log and every row read agree.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rollups = bool(widths) and query.metadata is None
        now, materialized, pending = await _snapshot_state(conn, query.relative, rollups)
        start = None if query.start is None else resolve("from", query.start, now)
        end = None if query.end is None else resolve("to", query.end, now)
        if start is None or end is None:
            start, end = await _extent(conn, query.sensors, start, end)
            if start is None or end is None or start >= end:
                return []
        check_range(start, end, query.bucket, max_points)
        usable = usable_widths(widths, query.bucket, query.tz, (start, end)) if rollups else []
        segments = plan((start, end), usable, materialized, pending)
        sql, args = aggregate_sql(query, segments)
        rows = [dict(row) for row in await conn.fetch(sql, *args)]
        if query.fill == "none":
            return rows
        series_sql, args = bucket_series_sql(query, start, end)
        buckets = [row[0] for row in await conn.fetch(series_sql, *args)]
        return fill_gaps(rows, buckets, query)
