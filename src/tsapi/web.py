"""The small pieces every route shares: JSON answers and error answers."""

from typing import Any
from urllib.parse import urlencode

import asyncpg
import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from tsapi.db import PoolTimeout
from tsapi.errors import ApiError
from tsapi.metrics import DATABASE_ERRORS

log = structlog.get_logger(__name__)

_encoder = msgspec.json.Encoder(decimal_format="number")

# Errors meaning the database cannot be reached right now, as opposed to a bug in a query.
UNAVAILABLE = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # no connection within pool_timeout, or no answer at all
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or died, PgBouncer's too
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # stopped, or the connection terminated
    asyncpg.CrashShutdownError,  # another backend crashed
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,  # the connection closed under the query, or the pool is closing
    # The server ended the connection between two statements (an unsolicited FATAL, as a
    # shutdown sends): asyncpg's protocol then refuses the next one with this.
    asyncpg.InternalClientError,
)


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_encoder.encode(content), status, headers, media_type="application/json")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.body(), exc.status, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette's Allow names one route's methods; a path has more
        headers["Allow"] = _allowed_methods(request)
    return json_response({"error": exc.detail}, exc.status_code, headers)


def next_link(request: Request, name: str, value: str) -> str:
    """The ``Link`` header to the next page: this request with ``name`` set to ``value``, as a
    reference relative to this server. Written from the parameters the route parsed already:
    parsing the whole URL again costs a twentieth of a short page's answer."""
    params = [item for item in request.query_params.multi_items() if item[0] != name]
    return f'<{request.scope["path"]}?{urlencode([*params, (name, value)])}>; rel="next"'


def _allowed_methods(request: Request) -> str:
    """Every method some route answers for the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def unavailable(request: Request, exc: Exception) -> Response:
    DATABASE_ERRORS.labels("unavailable").inc()
    log.warning("database unavailable", error=type(exc).__name__, path=request.url.path)
    return json_response(
        {"error": "the database is unavailable; retry shortly"}, 503, {"Retry-After": "1"}
    )


async def too_slow(request: Request, exc: Exception) -> Response:
    DATABASE_ERRORS.labels("timeout").inc()
    seconds = request.app.state.tsapi.settings.statement_timeout
    return json_response(
        {
            "error": f"the query ran longer than the {seconds:g} s allowed and was cancelled;"
            " narrow it (a shorter range, fewer sensors, a wider bucket)"
        },
        503,
    )


async def timed_out(request: Request, exc: Exception) -> Response:
    """Behind PgBouncer, a query over statement_timeout is cancelled by tsapi itself, and ends
    in a TimeoutError; elsewhere the server cancels it first, and a TimeoutError means it does
    not answer at all."""
    pooled = request.app.state.tsapi.settings.database_pooler == "pgbouncer"
    if pooled and not isinstance(exc, PoolTimeout):
        return await too_slow(request, exc)
    return await unavailable(request, exc)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", path=request.url.path, method=request.method)
    return json_response({"error": "internal error; it has been logged"}, 500)


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    HTTPException: http_error,
    asyncpg.QueryCanceledError: too_slow,
    **dict.fromkeys(UNAVAILABLE, unavailable),
    TimeoutError: timed_out,
    Exception: unexpected,
}
