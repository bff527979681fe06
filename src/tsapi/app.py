"""The one application object: routes, error handling, and the lifespan that opens the pool."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from starlette.applications import Starlette

from tsapi import (
    aggregate_routes,
    db,
    idempotency,
    influx_routes,
    metrics,
    middleware,
    migrate,
    openapi,
    routes,
    sensor_routes,
)
from tsapi.db import Connection
from tsapi.rollups import Rollups
from tsapi.settings import Settings
from tsapi.state import State
from tsapi.storage import Storage
from tsapi.web import EXCEPTION_HANDLERS

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL = 600.0  # seconds between making the coming periods' partitions


async def _every(
    seconds: float, what: str, job: Callable[[Connection], Awaitable[object]], state: State
) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            async with state.pool.acquire() as conn:
                await job(conn)
        except Exception:  # the next round tries again
            log.exception(f"{what} failed")


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
                dedupe=settings.dedupe,
            )
        finally:
            await conn.close()
        pool = await db.create_pool(settings)
        state = State(settings, pool, storage, rollups)
        app.state.tsapi = state
        jobs = [
            asyncio.create_task(
                _every(MAINTENANCE_INTERVAL, "partition maintenance", storage.maintain, state)
            )
        ]
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
            await pool.close()

    return Starlette(
        routes=[
            *aggregate_routes.routes,
            *sensor_routes.routes,
            *routes.routes,
            *influx_routes.routes,
            *openapi.routes,
            *metrics.routes,
        ],
        middleware=middleware.stack(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
