"""HTTP routes. Each parses its input, calls the function that does the work, and formats."""

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi import (
    formats,
    idempotency,
    ingest,
    metrics,
    permissions,
    reader,
    retention,
    streaming,
)
from tsapi.bodies import read_body
from tsapi.query import parse_readings_query
from tsapi.state import State
from tsapi.web import json_response, next_link

READINESS_TIMEOUT = 2.0


async def post_readings(request: Request) -> Response:
    state: State = request.app.state.tsapi
    streamed = streaming.readings_parser(request.headers.get("content-type"), state.settings)
    if streamed is not None:  # NDJSON or CSV
        return await streaming.ingest(request, state, *streamed, _count)
    # Any other Content-Type is JSON: `curl -d` labels it a form.
    body = await read_body(request, state.settings.max_body_bytes)
    with metrics.counting_rejections():
        batch = ingest.parse_json(body, state.settings.max_rows_per_request)
    permissions.check_writes(request.scope, batch)
    retention.refuse_expired(body, batch, state.settings.retention)
    async with state.pool.acquire(timeout=state.settings.pool_timeout) as conn:

        async def write() -> Response:
            inserted = await state.storage.write(conn, batch)
            metrics.READINGS_INGESTED.inc(inserted)
            return _count(inserted)

        # Once per Idempotency-Key: a retry of a request that was done answers its answer.
        return await idempotency.respond(request, conn, body, write)


def _count(inserted: int) -> Response:
    return Response(str(inserted), media_type="application/json")


async def get_readings(request: Request) -> Response:
    state: State = request.app.state.tsapi
    settings = state.settings
    params = request.query_params
    query = parse_readings_query(
        params, {"sensor": params.getlist("sensor")}, settings.default_limit, settings.max_limit
    )
    output = formats.negotiate(params, request.headers.get("accept"))
    if query.limit is None:
        export = await reader.open_export(state.pool, query, settings.pool_timeout)
        return formats.stream(output, reader.READINGS, export.batches(), export.resources)
    page = await reader.fetch_page(state.pool, query, settings.pool_timeout)
    headers = {} if page.next is None else {"Link": next_link(request, "cursor", page.next)}
    return formats.respond(output, reader.READINGS, page.rows, page.next, headers)


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
