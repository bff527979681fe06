"""GET /readings/aggregate answered: its plan (which parts rollups answer, over which range) read
in one statement, its rows in another that checks the plan still holds (see snapshots)."""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tsapi import snapshots
from tsapi.aggregate import AggregateQuery, aggregate_sql, bucket_series_sql, fill_gaps
from tsapi.aggregate_params import check_range
from tsapi.buckets import Segment, plan, usable_widths
from tsapi.db import Connection
from tsapi.errors import ApiError
from tsapi.instants import Instant, resolve
from tsapi.query import SQL_OFFSET_LIMIT, from_now
from tsapi.sqlbuilder import SqlBuilder

_ONE_MICROSECOND = timedelta(microseconds=1)

# What an aggregate's plan rests on besides now(), by name, with its type. When rollups may answer:
# how far each width is materialized, and the time ranges written late since.
_ROLLUP_STATE = {
    "width_s": ("ARRAY(SELECT width_s FROM tsapi_rollup_state ORDER BY width_s)", "integer[]"),
    "materialized": (
        "ARRAY(SELECT materialized FROM tsapi_rollup_state ORDER BY width_s)",
        "timestamptz[]",
    ),
    "lows": ("ARRAY(SELECT lo FROM tsapi_rollup_log ORDER BY lo, hi)", "timestamptz[]"),
    "highs": ("ARRAY(SELECT hi FROM tsapi_rollup_log ORDER BY lo, hi)", "timestamptz[]"),
}


def _premises(
    sql: SqlBuilder, query: AggregateQuery, rollups: bool, bound: Callable[[str, Instant], str]
) -> dict[str, tuple[str, str]]:
    """The SQL of what the plan rests on: the rollups' state if they may answer, and where the
    readings (of the sensors asked for) start or end when a bound is missing; ``bound`` writes
    the SQL of one given."""
    premises = dict(_ROLLUP_STATE) if rollups else {}
    if query.start is None or query.end is None:
        conditions = [sql.sensor_in(query.sensors) if query.sensors else "sensor IS NOT NULL"]
        if query.start is not None:
            conditions.append(f"ts >= {bound('from', query.start)}")
        if query.end is not None:
            conditions.append(f"ts < {bound('to', query.end)}")
        # As min() and max() would, NULLs aside (an adopted table's ts might allow them).
        where = " AND ".join([*conditions, "ts IS NOT NULL"])

        def edge(order: str) -> tuple[str, str]:
            # The first row in ts order rather than min() or max(): the same index entry, planned
            # in two thirds of the time, which counts as the rows' statement, checking it, is
            # planned for every request.
            edge_sql = f"(SELECT ts FROM readings WHERE {where} ORDER BY ts {order} LIMIT 1)"  # noqa: S608
            return edge_sql, "timestamptz"

        # Only a missing bound is looked for, within the given one: over every partition,
        # looking costs more than the rest of the answer once there are hundreds.
        if query.start is None:
            premises["first"] = edge("ASC")
        if query.end is None:
            premises["last"] = edge("DESC")
    return premises


@dataclass(frozen=True)
class _Plan:
    start: datetime
    end: datetime
    segments: list[Segment]
    premises: dict[str, Any]  # what the plan rests on, by name, as it was read


async def _read_plan(
    conn: Connection,
    query: AggregateQuery,
    rollups: bool,
    widths: Sequence[timedelta],
    max_points: int,
) -> _Plan | None:
    """How to answer the query, from what one statement read; None when no reading is in range."""
    now = None
    bounds = (query.start, query.end)
    if any(isinstance(bound, timedelta) and abs(bound) > SQL_OFFSET_LIMIT for bound in bounds):
        now = await conn.fetchval("SELECT now()")  # too far from it for PostgreSQL's arithmetic
    sql = SqlBuilder()
    premises = _premises(sql, query, rollups, functools.partial(_bound_sql, sql, now=now))
    read: dict[str, Any] = {}
    if premises or (query.relative and now is None):
        columns = ["now()", *(f"{expr} AS {name}" for name, (expr, _) in premises.items())]
        row = await conn.fetchrow(f"SELECT {', '.join(columns)}", *sql.args)
        assert row is not None
        now = now or row[0]
        read = {name: row[name] for name in premises}
    start = read.get("first") if query.start is None else resolve("from", query.start, now)
    end: datetime | None
    if query.end is not None:
        end = resolve("to", query.end, now)
    else:
        end = None if read["last"] is None else read["last"] + _ONE_MICROSECOND
    if start is None or end is None:
        return None
    check_range(start, end, query.bucket, max_points)
    usable = usable_widths(widths, query.bucket, query.tz, (start, end)) if rollups else []
    materialized = {
        timedelta(seconds=s): at
        for s, at in zip(read.get("width_s", []), read.get("materialized", []), strict=True)
    }
    pending = list(zip(read.get("lows", []), read.get("highs", []), strict=True))
    return _Plan(start, end, plan((start, end), usable, materialized, pending), read)


def _bound_sql(sql: SqlBuilder, name: str, bound: Instant, now: datetime | None) -> str:
    """A given bound in SQL: a relative one against the statement's now(), unless it is known."""
    if isinstance(bound, timedelta) and now is None:
        return from_now(bound)
    return sql.arg(resolve(name, bound, now), "::timestamptz")


async def _read_rows(
    conn: Connection, query: AggregateQuery, planned: _Plan, rollups: bool, checked: bool
) -> list[asyncpg.Record] | None:
    """The plan's rows; when ``checked``, None for none: what the plan rests on may have changed
    since it was read (see snapshots)."""
    sql = SqlBuilder()
    check = None
    if checked and planned.premises:
        resolved = {"from": planned.start, "to": planned.end}

        def bound(name: str, _given: Instant) -> str:
            return sql.arg(resolved[name], "::timestamptz")

        check = " AND ".join(
            snapshots.unchanged(expr, sql.arg(planned.premises[name], f"::{kind}"))
            for name, (expr, kind) in _premises(sql, query, rollups, bound).items()
        )
    rows = await conn.fetch(aggregate_sql(sql, query, planned.segments, check), *sql.args)
    return None if check is not None and not rows else rows


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
    # The rollup state, the late-write log and every row read must agree.
    rollups = bool(widths) and query.metadata is None

    async def read(checked: bool) -> tuple[_Plan | None, list[asyncpg.Record]] | None:
        planned = await _read_plan(conn, query, rollups, widths, max_points)
        if planned is None:  # nothing in range, as one statement saw it
            return None, []
        rows = await _read_rows(conn, query, planned, rollups, checked)
        return None if rows is None else (planned, rows)

    planned, records = await snapshots.read_consistently(conn, read)
    rows = [dict(record) for record in records]
    if planned is None or query.fill == "none":
        return rows
    # Which buckets exist depends on nothing a snapshot holds.
    series_sql, args = bucket_series_sql(query, planned.start, planned.end)
    buckets = [row[0] for row in await conn.fetch(series_sql, *args)]
    return fill_gaps(rows, buckets, query)
