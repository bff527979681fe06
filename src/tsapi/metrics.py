"""What tsapi counts, and GET /metrics, which shows it in Prometheus' text format.

The figures are those of the process answering the scrape (each process counts its own).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsapi.errors import ApiError
from tsapi.state import State

REQUESTS = Counter(
    "tsapi_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "tsapi_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template",
    ["method", "route"],
)
READINGS_INGESTED = Counter("tsapi_readings_ingested", "Readings written by POST /readings")
READINGS_REJECTED = Counter(
    "tsapi_readings_rejected",
    "Invalid readings refused by POST /readings, as its 422 answers list them (100 at most each)",
)
DATABASE_ERRORS = Counter(
    "tsapi_database_errors",
    "Requests failed by the database: unavailable (unreachable, no free connection) or timeout",
    ["kind"],
)
POOL = Gauge("tsapi_db_pool_connections", "Database connections of the pool, by state", ["state"])
CACHE_LOOKUPS = Counter(
    "tsapi_cache_lookups",
    "Lookups in tsapi's in-process caches, by cache (api_keys, ...) and result (hit or miss)",
    ["cache", "result"],
)


@contextmanager
def counting_rejections() -> Iterator[None]:
    """Counts the invalid readings of a 422 raised inside."""
    try:
        yield
    except ApiError as exc:
        if exc.status == 422:
            READINGS_REJECTED.inc(len(exc.details.get("errors", ())))
        raise


async def metrics(request: Request) -> Response:
    state: State = request.app.state.tsapi
    idle = state.pool.get_idle_size()
    POOL.labels("idle").set(idle)
    POOL.labels("in_use").set(state.pool.get_size() - idle)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
