"""Reading readings back: validated query parameters and the one parameterised SQL they make."""

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from tsapi.errors import ApiError

Order = Literal["asc", "desc"]

# An unescaped "+01:00" in a query string arrives as " 01:00".
_SPACED_OFFSET = re.compile(r" (\d\d:?\d\d)$")


@dataclass(frozen=True)
class ReadingsQuery:
    limit: int
    sensors: tuple[uuid.UUID, ...] = ()
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    order: Order = "desc"

    def sql(self) -> tuple[str, list[object]]:
        conditions: list[str] = []
        args: list[object] = []
        if self.sensors:
            args.append(list(self.sensors))
            conditions.append(f"sensor = ANY(${len(args)}::uuid[])")
        if self.start is not None:
            args.append(self.start)
            conditions.append(f"ts >= ${len(args)}")
        if self.end is not None:
            args.append(self.end)
            conditions.append(f"ts < ${len(args)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        args.append(self.limit)
        direction = "ASC" if self.order == "asc" else "DESC"  # from a fixed set, never user text
        sql = (
            f"SELECT ts, sensor, metadata, value FROM readings {where} "  # noqa: S608
            f"ORDER BY ts {direction} LIMIT ${len(args)}"
        )
        return sql, args


def parse_readings_query(
    params: Mapping[str, str],
    multi: Mapping[str, Sequence[str]],
    default_limit: int,
    max_limit: int,
) -> ReadingsQuery:
    """Validate GET /readings parameters; a bad one is a 400 that names it."""
    start = _parse_time("from", params.get("from"))
    end = _parse_time("to", params.get("to"))
    if start is not None and end is not None and start >= end:
        raise ApiError(400, "'from' must be earlier than 'to'", parameter="from")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "'order' must be asc or desc", parameter="order")
    return ReadingsQuery(
        limit=_parse_limit(params.get("limit"), default_limit, max_limit),
        sensors=_parse_sensors(multi.get("sensor", ())),
        start=start,
        end=end,
        order="asc" if order == "asc" else "desc",
    )


def _parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"'limit' must be an integer, not {raw!r}", parameter="limit") from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"'limit' must be between 1 and {maximum}", parameter="limit")
    return limit


def _parse_sensors(values: Sequence[str]) -> tuple[uuid.UUID, ...]:
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


def _parse_time(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        ts = datetime.fromisoformat(_SPACED_OFFSET.sub(r"+\1", raw))
    except ValueError:
        raise ApiError(
            400, f"'{name}' must be an RFC 3339 timestamp, not {raw!r}", parameter=name
        ) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
