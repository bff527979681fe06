"""GET /readings/aggregate's parameters: parsed, and each bad one refused with a 400 naming it."""

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.datastructures import QueryParams

from tsapi.aggregate import FILLS, FUNCTIONS, AggregateQuery
from tsapi.containment import parse_containment
from tsapi.durations import format_duration, parse_duration
from tsapi.errors import ApiError
from tsapi.ingest import TS_RANGE_REASON
from tsapi.instants import parse_instant
from tsapi.query import parse_sensors

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
