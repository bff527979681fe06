"""The one application object: routes, error handling, and the lifespan that opens the pool."""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tsapi import (
    aggregate_routes,
    db,
    idempotency,
    influx_routes,
    maintenance,
    metrics,
    middleware,
    migrate,
    openapi,
    routes,
    sensor_routes,
)
from tsapi.cache import ReadCache
from tsapi.db import Connection
from tsapi.http_cache import HttpCache
from tsapi.invalidations import Invalidations
from tsapi.rollups import Rollups
from tsapi.settings import Settings
from tsapi.state import State
from tsapi.storage import Storage
from tsapi.web import EXCEPTION_HANDLERS, UNAVAILABLE

log = structlog.get_logger(__name__)


async def _every(
    seconds: float,
    what: str,
    job: Callable[[Connection], Awaitable[object]],
    state: State,
    first: float | None = None,
) -> None:
    await asyncio.sleep(seconds if first is None else first)
    while True:
        try:
            # Direct connections: jobs hold session locks, and may rightly run long.
            async with state.direct.acquire() as conn:
                await job(conn)
        except UNAVAILABLE as exc:  # the database is down: the next round tries again
            log.warning(f"{what} skipped: the database is unavailable", error=type(exc).__name__)
        except Exception:  # the next round tries again
            log.exception(f"{what} failed")
        await asyncio.sleep(seconds)


async def _close(pool: db.Pool, timeout: float) -> None:
    """Close gracefully, or, with connections still busy after ``timeout``, at once."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        pool.terminate()


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        conn = await db.connect(settings)
        try:
            await migrate.upgrade(conn, settings)
            rollups = Rollups(list(settings.rollup_widths))
            await rollups.setup(conn)
            storage = await Storage.open(
                conn,
                settings.partition_interval,
                rollups=bool(settings.rollup_widths),
                announce=settings.cache_ttl > 0,
                dedupe=settings.dedupe,
                retention=settings.retention,
                connect_aside=functools.partial(db.connect_aside, settings),
            )
        finally:
            await conn.close()
        maintenance.warn_unavailable(settings, storage.layout)
        pool = await db.create_pool(settings)
        direct = await db.create_direct_pool(settings)
        state = State(settings, pool, storage, rollups, direct)
        if settings.cache_ttl > 0:
            state.cache = ReadCache(settings.cache_ttl, settings.cache_max_bytes)
            state.invalidations = Invalidations(settings, state.cache)
        app.state.tsapi = state
        jobs = [
            asyncio.create_task(
                _every(
                    settings.maintenance_interval,
                    "maintenance",
                    lambda conn: maintenance.run_round(conn, settings, storage),
                    state,
                    first=0,
                )
            )
        ]
        if state.invalidations is not None:
            jobs.append(asyncio.create_task(state.invalidations.run()))
        jobs.append(
            asyncio.create_task(
                _every(
                    idempotency.PURGE_INTERVAL,
                    "idempotency key purge",
                    lambda conn: idempotency.purge(conn, settings.idempotency_retention),
                    state,
                )
            )
        )
        if settings.rollup_widths:
            jobs.append(
                asyncio.create_task(
                    _every(
                        settings.rollup_refresh_interval, "rollup refresh", rollups.refresh, state
                    )
                )
            )
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await _close(pool, settings.shutdown_timeout)
            await _close(direct, settings.shutdown_timeout)

    return Starlette(
        routes=[
            *aggregate_routes.routes,
            *sensor_routes.routes,
            *routes.routes,
            *influx_routes.routes,
            *openapi.routes,
            *(metrics.routes if settings.metrics else []),
        ],
        # The cache innermost: it answers only requests that every other layer let through.
        middleware=[*middleware.stack(settings), Middleware(HttpCache)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
