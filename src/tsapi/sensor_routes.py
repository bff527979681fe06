"""HTTP routes for sensors and latest readings."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi.containment import parse_containment
from tsapi.db import Connection
from tsapi.errors import ApiError
from tsapi.formats import format_ts
from tsapi.query import parse_sensors
from tsapi.reader import reading_json
from tsapi.sensors import SensorFilter, latest, summaries
from tsapi.state import State
from tsapi.web import json_response, next_link


def _sensor_id(request: Request) -> uuid.UUID:
    raw = request.path_params["sensor"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, f"{raw!r} is not a sensor UUID", parameter="sensor") from None


def _limit(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit", str(default))
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"'limit' must be between 1 and {maximum}", parameter="limit")
    return int(raw)


def _summary_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "sensor": row["sensor"],
        "count": row["count"],
        "first_ts": format_ts(row["first_ts"]),
        "last_ts": format_ts(row["last_ts"]),
        "last_value": row["last_value"],
        "metadata": row["metadata"],
    }


async def list_sensors(request: Request) -> Response:
    state: State = request.app.state.tsapi
    params = request.query_params
    after = params.get("after")
    try:
        after_id = None if after is None else uuid.UUID(after)
    except ValueError:
        raise ApiError(400, "'after' must be a sensor UUID", parameter="after") from None
    limit = _limit(request, state.settings.default_limit, state.settings.max_limit)
    query = SensorFilter(
        sensors=parse_sensors(params.getlist("sensor")),
        metadata=parse_containment("metadata", params.get("metadata")),
        after=after_id,
        limit=limit + 1,  # one more says whether there is a next page
    )
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:
        rows = await summaries(conn, query)
    headers = {}
    if len(rows) > limit:
        rows = rows[:limit]
        headers["Link"] = next_link(request, "after", str(rows[-1]["sensor"]))
    return json_response([_summary_out(row) for row in rows], headers=headers)


async def _one_sensor(
    request: Request,
    fetch: Callable[[Connection, SensorFilter], Awaitable[list[asyncpg.Record]]],
) -> asyncpg.Record:
    state: State = request.app.state.tsapi
    sensor = _sensor_id(request)
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:
        rows = await fetch(conn, SensorFilter(sensors=(sensor,)))
    if not rows:
        raise ApiError(404, f"no readings for sensor {sensor}")
    return rows[0]


async def get_sensor(request: Request) -> Response:
    return json_response(_summary_out(await _one_sensor(request, summaries)))


async def get_sensor_latest(request: Request) -> Response:
    return _json_text(reading_json(await _one_sensor(request, latest)))


async def latest_readings(request: Request) -> Response:
    state: State = request.app.state.tsapi
    sensors = parse_sensors(request.query_params.getlist("sensor"))
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:
        rows = await latest(conn, SensorFilter(sensors=sensors))
    return _json_text(f"[{','.join(map(reading_json, rows))}]")


def _json_text(text: str) -> Response:
    return Response(text, media_type="application/json")


routes = [
    Route("/readings/latest", latest_readings, methods=["GET"]),
    Route("/sensors", list_sensors, methods=["GET"]),
    Route("/sensors/{sensor}", get_sensor, methods=["GET"]),
    Route("/sensors/{sensor}/latest", get_sensor_latest, methods=["GET"]),
]
