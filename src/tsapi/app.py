"""The one application object: routes, error handling, and the lifespan that opens the pool."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette

from tsapi import db, migrate, openapi, routes
from tsapi.settings import Settings
from tsapi.state import State
from tsapi.storage import Storage
from tsapi.web import EXCEPTION_HANDLERS

log = structlog.get_logger(__name__)

MAINTENANCE_INTERVAL = 600.0  # seconds between making the coming periods' partitions


async def _maintain(state: State) -> None:
    while True:
        await asyncio.sleep(MAINTENANCE_INTERVAL)
        try:
            async with state.pool.acquire() as conn:
                await state.storage.maintain(conn)
        except Exception:  # the next round tries again; writes create partitions themselves
            log.exception("partition maintenance failed")


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        conn = await db.connect(settings)
        try:
            await migrate.upgrade(conn, settings)
            storage = await Storage.open(conn, settings.partition_interval)
        finally:
            await conn.close()
        pool = await db.create_pool(settings)
        state = State(settings, pool, storage)
        app.state.tsapi = state
        maintenance = asyncio.create_task(_maintain(state))
        try:
            yield
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            await pool.close()

    return Starlette(
        routes=[*routes.routes, *openapi.routes],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
