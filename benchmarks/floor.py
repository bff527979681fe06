"""The floor under tsapi's raw-row shapes: an ASGI app that does only what an HTTP API answering
them cannot skip. It parses ``GET /readings`` as tsapi does, runs tsapi's own SQL on a pooled
connection and writes the rows as tsapi does, all on the same uvicorn; there is no routing,
middleware, cursor, ETag or log line. ``benchmarks.shapes`` asks it beside tsapi: the gap between
the two is what tsapi's own machinery costs, and the floor's ratio to the direct SQL is the least
that tsapi's parts can show on the machine.

Served by ``running_floor``, or by hand with ``TSAPI_FLOOR_DATABASE_URL`` set:
``python -m uvicorn benchmarks.floor:app``.
"""

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope, Send

from benchmarks.common import Tsapi, free_port, running_server
from tsapi.query import parse_readings_query
from tsapi.reader import reading_json

DATABASE_URL_VARIABLE = "TSAPI_FLOOR_DATABASE_URL"
POOL_SIZE = 8  # as many connections as the benchmark's concurrent clients
_pool: asyncpg.Pool | None = None


async def _keep(conn: Any) -> None:
    """As tsapi's pool does: no reset query, a round trip, when a connection is released."""


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global _pool
    if scope["type"] == "lifespan":
        await receive()  # the startup
        url = os.environ[DATABASE_URL_VARIABLE]
        _pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=_keep)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # the shutdown
        await _pool.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert _pool is not None, "served only after its startup"
    body = b"{}"
    if scope["path"] == "/readings":
        params = QueryParams(scope["query_string"])
        query = parse_readings_query(params, {"sensor": params.getlist("sensor")}, 100, 10_000)
        sql, args = query.sql()
        async with _pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        # Every reading's row has a sensor key; the row of the query's now() has none.
        readings = [row for row in rows if row[1] is not None][: query.limit]
        body = b"[" + ",".join([reading_json(row) for row in readings]).encode() + b"]"
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_floor(database_url: str, log_path: Path) -> Iterator[Tsapi]:
    """The floor app on uvicorn as tsapi runs it (one process, uvloop, httptools), ready, and
    stopped on exit."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.floor:app", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header"]
    root = Path(__file__).resolve().parent.parent  # it runs elsewhere, and imports benchmarks
    env = {**os.environ, DATABASE_URL_VARIABLE: database_url, "PYTHONPATH": str(root)}
    with running_server(command, env, port, log_path) as floor:
        yield floor
