"""Reading readings back: validated query parameters and the one parameterised SQL they make."""

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from tsapi import cursors, instants
from tsapi.containment import parse_containment
from tsapi.errors import ApiError
from tsapi.instants import Instant
from tsapi.sqlbuilder import SqlBuilder

Order = Literal["asc", "desc"]

# The walk's total order (see cursors): ts, then sensor (a NULL one, which only an adopted table
# may hold, lowest), then the value's and the metadata's text, which only exact duplicates share.
# The (ts DESC, sensor DESC NULLS LAST) index gives the first two, so PostgreSQL sorts only rows
# sharing both. A uuid compares as its text does in the C collation, so the keyset condition may
# compare texts: COALESCE keeps a NULL from dropping a row out of that comparison.
KEY_COLUMNS = (
    "ts",
    "coalesce(sensor::text, '') COLLATE \"C\"",
    "coalesce(value::text, '') COLLATE \"C\"",
    "coalesce(metadata::text, '') COLLATE \"C\"",
)


def _rfc3339(instant: str) -> str:
    """An instant as formats.format_ts prints it. to_char() prints no infinity, which only an
    adopted table may hold: those print as the instants asyncpg decodes them to."""
    return (
        f"coalesce(to_char({instant} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        f" CASE WHEN {instant} > 'epoch' THEN '9999-12-31T23:59:59.999999Z'"
        " ELSE '0001-01-01T00:00:00.000000Z' END)"
    )


# What pages and exports select: the texts answers are written from, which PostgreSQL prints for
# less than asyncpg decodes the values and Python formats them. The last three are the sort keys,
# so PostgreSQL computes each once; the key's ts is parsed back from its text (cursors.key_of)
# for the few rows a cursor needs.
_SELECTED = [_rfc3339("ts"), *KEY_COLUMNS[1:]]
COLUMNS = ", ".join(_SELECTED)
# The row a page's query answers its now() in, for the next cursor to keep the window it resolved
# (see ReadingsQuery.sql): it has no sensor key, which every reading's row has.
NOW_ROW = f"SELECT {_rfc3339('now()')}, " + ", ".join(["NULL"] * (len(_SELECTED) - 1))
# Offsets up to this far from now() are resolved in the query itself, against its own now(): they
# stay within the range of both PostgreSQL's and Python's timestamps whatever the clock says.
SQL_OFFSET_LIMIT = timedelta(days=365_000)
_ORDER_BY = {
    "desc": "ts DESC, sensor DESC NULLS LAST, " + ", ".join(f"{c} DESC" for c in KEY_COLUMNS[2:]),
    "asc": "ts ASC, sensor ASC NULLS FIRST, " + ", ".join(f"{c} ASC" for c in KEY_COLUMNS[2:]),
}


@dataclass(frozen=True)
class ReadingsQuery:
    limit: int | None  # None: every row, streamed
    sensors: tuple[uuid.UUID, ...] = ()
    start: Instant | None = None  # inclusive
    end: Instant | None = None  # exclusive
    metadata: bytes | None = None  # a JSON object the readings' metadata must contain
    order: Order = "desc"
    after: cursors.Position | None = None  # where the previous page stopped

    @property
    def relative(self) -> bool:
        """Whether from or to are relative, and so need the database's now()."""
        return any(isinstance(bound, timedelta) for bound in (self.start, self.end))

    @property
    def resolved_in_sql(self) -> bool:
        """Whether the query resolves relative from/to against its own now(), sparing a round
        trip for it; a page's query answers that now() too, for cursors. Not when one bound is
        absolute: whether such a window is empty is known only with now(), and is checked first."""
        bounds = [bound for bound in (self.start, self.end) if bound is not None]
        return bool(bounds) and all(
            isinstance(bound, timedelta) and abs(bound) <= SQL_OFFSET_LIMIT for bound in bounds
        )

    def identity(self) -> bytes:
        """What a cursor must belong to: everything that selects and orders rows."""
        return msgspec.json.encode(
            [self.order, sorted(map(str, self.sensors)), *map(_describe, (self.start, self.end))]
        ) + (self.metadata or b"")

    def window(self, now: datetime | None) -> tuple[datetime | None, datetime | None]:
        """from and to as instants, relative ones resolved against ``now``; 400 if empty."""
        start = None if self.start is None else instants.resolve("from", self.start, now)
        end = None if self.end is None else instants.resolve("to", self.end, now)
        _check_order(start, end)
        return start, end

    def check_order(self) -> None:
        """400 if the window is empty, where that is known without now(): bounds of one kind."""
        if type(self.start) is type(self.end):
            _check_order(self.start, self.end)

    def sql(self, now: datetime | None = None) -> tuple[str, list[object]]:
        conditions: list[str] = []
        builder = SqlBuilder()
        arg = builder.arg
        if self.sensors:
            conditions.append(builder.sensor_in(self.sensors))
        # Offsets from the query's own now(), or instants (then the window was checked).
        in_query = now is None and self.resolved_in_sql
        bounds = (self.start, self.end) if in_query else self.window(now)
        for comparison, instant in zip((">=", "<"), bounds, strict=True):
            if instant is not None:
                at = from_now(instant) if isinstance(instant, timedelta) else arg(instant)
                conditions.append(f"ts {comparison} {at}")
        if self.metadata is not None:
            conditions.append(f"metadata @> {arg(self.metadata)}::jsonb")
        # Comparisons and orders come from fixed sets, never from user text.
        beyond = ">" if self.order == "asc" else "<"
        fetch = self.limit
        if self.after is not None:
            ts, *texts = self.after.key
            ts_arg = arg(ts)
            bound = ", ".join([ts_arg, *(f"{arg(text)}::text" for text in texts)])
            # The bound on ts alone is the one an index scan can start from.
            conditions.append(f"ts {beyond}= {ts_arg}")
            # Rows at the position itself come first, for the already answered ones to be skipped.
            beyond += "=" if self.after.seen else ""
            conditions.append(f"({', '.join(KEY_COLUMNS)}) {beyond} ({bound})")
            fetch = None if self.limit is None else self.limit + self.after.seen
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        # One more row than the page: whether it exists says if there is a next page. Written
        # into the SQL, as an int: as a parameter, it makes PostgreSQL plan the query afresh for
        # every request (its generic plan would assume a tenth of the table), and planning grows
        # with the partitions: 26 ms for GET /readings over 400 of them.
        limit = "" if fetch is None else f"LIMIT {fetch + 1:d}"  # :d takes nothing but an int
        sql = f"SELECT {COLUMNS} FROM readings {where} ORDER BY {_ORDER_BY[self.order]} {limit}"  # noqa: S608
        if in_query and self.limit is not None:
            # Once, rather than as a column of every row, which costs PostgreSQL and asyncpg a
            # tenth of the query: NOW_ROW comes first as PostgreSQL runs a UNION ALL, and the
            # readings after it in their order whatever the plan (a LIMIT runs in one process).
            sql = f"{NOW_ROW} UNION ALL ({sql})"
        return sql, builder.args


def parse_readings_query(
    params: Mapping[str, str],
    multi: Mapping[str, Sequence[str]],
    default_limit: int,
    max_limit: int,
) -> ReadingsQuery:
    """Validate GET /readings parameters; a bad one is a 400 that names it."""
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "'order' must be asc or desc", parameter="order")
    query = ReadingsQuery(
        limit=_parse_limit(params.get("limit"), default_limit, max_limit),
        sensors=parse_sensors(multi.get("sensor", ())),
        start=instants.parse_instant("from", params.get("from")),
        end=instants.parse_instant("to", params.get("to")),
        metadata=parse_containment("metadata", params.get("metadata")),
        order="asc" if order == "asc" else "desc",
    )
    query.check_order()  # before any database work
    cursor = params.get("cursor")
    if cursor is None:
        return query
    if query.limit is None:
        raise ApiError(400, "'cursor' cannot be combined with limit=all", parameter="cursor")
    after = cursors.decode(cursor, query.identity())
    if query.relative and after.now is None:  # only a forged cursor lacks it
        raise ApiError(400, "'cursor' is garbled", parameter="cursor")
    return dataclasses.replace(query, after=after)


def _parse_limit(raw: str | None, default: int, maximum: int) -> int | None:
    if raw is None:
        return default
    if raw == "all":
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(
            400, f"'limit' must be an integer or all, not {raw!r}", parameter="limit"
        ) from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"'limit' must be between 1 and {maximum}, or all", parameter="limit")
    return limit


def parse_sensors(values: Sequence[str]) -> tuple[uuid.UUID, ...]:
    """The sensors a ``sensor`` parameter names, repeated or comma-separated, each once; 400 if
    one is not a UUID."""
    sensors = []
    for value in values:
        for part in value.split(","):
            try:
                sensors.append(uuid.UUID(part.strip()))
            except ValueError:
                raise ApiError(
                    400, f"'sensor' must be a UUID, not {part!r}", parameter="sensor"
                ) from None
    return tuple(dict.fromkeys(sensors))


def from_now(offset: timedelta) -> str:
    """An offset from the query's own now(), written into the SQL as a whole number of
    microseconds (the only values written there are ints). As a parameter, PostgreSQL's generic
    plan cannot tell how much of the table the window holds, and the custom plans it makes
    instead cost a planning per request: a fifth of one sensor's hour."""
    return f"now() + interval '{offset // timedelta(microseconds=1):d} microseconds'"


def _check_order(start: Instant | None, end: Instant | None) -> None:
    if start is not None and end is not None and start >= end:  # type: ignore[operator]
        raise ApiError(400, "'from' must be earlier than 'to'", parameter="from")


def _describe(bound: Instant | None) -> object:
    return ["now", bound.total_seconds()] if isinstance(bound, timedelta) else bound
