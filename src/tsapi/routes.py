"""HTTP routes. Each parses its input, calls the function that does the work, and formats."""

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi import ingest
from tsapi.query import parse_readings_query
from tsapi.state import State
from tsapi.web import json_response, read_body

READINESS_TIMEOUT = 2.0


class ReadingOut(msgspec.Struct):
    ts: str
    sensor: uuid.UUID | None
    metadata: msgspec.Raw | None
    value: Decimal


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2024-05-01T12:00:00.000000Z."""
    return ts.isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


async def post_readings(request: Request) -> Response:
    state: State = request.app.state.tsapi
    # The body is JSON whatever the Content-Type says: `curl -d` labels it a form.
    body = await read_body(request, state.settings.max_body_bytes)
    batch = ingest.parse_json(body, state.settings.max_rows_per_request)
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:
        inserted = await state.storage.write(conn, batch)
    return Response(str(inserted), media_type="application/json")


async def get_readings(request: Request) -> Response:
    state: State = request.app.state.tsapi
    params = request.query_params
    query = parse_readings_query(
        params,
        {"sensor": params.getlist("sensor")},
        state.settings.default_limit,
        state.settings.max_limit,
    )
    sql, args = query.sql()
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:
        rows = await conn.fetch(sql, *args)
    return json_response([ReadingOut(format_ts(ts), s, m, v) for ts, s, m, v in rows])


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: State = request.app.state.tsapi
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready", which is this route's answer
        return json_response(
            {"status": "unavailable", "database": type(exc).__name__},
            503,
            {"Retry-After": "1"},
        )
    return json_response({"status": "ready", "storage": state.storage.layout.value})


routes = [
    Route("/readings", post_readings, methods=["POST"]),
    Route("/readings", get_readings, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
