"""Running tsapi: the database (embedded when none is configured), then the HTTP server."""

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from types import FrameType
from typing import Any, TypeVar

import structlog
import uvicorn
from pydantic import SecretStr

from tsapi import collector, db, migrate, retention, workers
from tsapi.app import create_app
from tsapi.embedded import EmbeddedPostgres
from tsapi.rollups import Rollups
from tsapi.settings import Settings, redact_url
from tsapi.storage import detect_layout

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


class Stopped(BaseException):
    """A stop signal arrived; raised to unwind, so that the embedded server is stopped too.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a running database: the configured one, or an embedded one that is
    started here and stopped on exit."""
    if settings.database_url is not None:
        log.info("database", url=redact_url(settings.database_url.get_secret_value()))
        yield settings
        return
    with EmbeddedPostgres(settings.data_dir) as embedded:  # it logs where its data is
        yield settings.model_copy(update={"database_url": SecretStr(embedded.url)})


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for listener in server.sockets:
                host, port = listener.getsockname()[:2]
                log.info("tsapi listening", url=f"http://{host}:{port}")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then stop the HTTP server and the embedded database."""
    # uvicorn handles the signals while it serves, then raises them again once it has stopped;
    # this handler turns them into an exception that unwinds through the database's stop.
    previous = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        with database(settings) as ready:
            # Migrating here rather than only in the app's startup makes a schema the database
            # refuses a clear error rather than a failed ASGI lifespan.
            asyncio.run(_upgrade(ready))
            config: dict[str, Any] = {
                "host": ready.host,
                "port": ready.port,
                "log_config": None,
                "access_log": False,
                "server_header": False,
                "timeout_keep_alive": ready.keep_alive_timeout,
                # On a stop signal: no new connections, in-flight requests get this long.
                "timeout_graceful_shutdown": ready.shutdown_timeout,
                "lifespan": "on",
            }
            if ready.workers > 1:
                workers.serve(ready, **config)  # returns once a stop signal has stopped them
                log.info("tsapi stopped")
            else:
                app = create_app(ready)
                collector.tune()
                _Server(uvicorn.Config(app, **config)).run()
    except Stopped as stop:
        log.info("tsapi stopped", signal=str(stop))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _upgrade(ready: Settings) -> list[migrate.Migration]:
    conn = await db.connect(ready)
    try:
        return await migrate.upgrade(conn, ready)
    finally:
        await conn.close()


def upgrade(settings: Settings) -> list[migrate.Migration]:
    with database(settings) as ready:
        return asyncio.run(_upgrade(ready))


async def _rebuild_rollups(ready: Settings, start: datetime, end: datetime) -> tuple[datetime, int]:
    conn = await db.connect(ready)
    try:
        await migrate.upgrade(conn, ready)
        rollups = Rollups(list(ready.rollup_widths))
        await rollups.setup(conn)
        kept = await retention.kept_since(conn, await detect_layout(conn))
        return await rollups.rebuild(conn, start, end, kept)
    finally:
        await conn.close()


def rebuild_rollups(settings: Settings, start: datetime, end: datetime) -> tuple[datetime, int]:
    """Recompute the rollups over [start, end) from the readings, from where the readings kept
    begin at the earliest; that start, and the rows written."""
    with database(settings) as ready:
        return asyncio.run(_rebuild_rollups(ready, start, end))


async def _on_database(ready: Settings, action: Callable[[db.Connection], Awaitable[T]]) -> T:
    conn = await db.connect(ready)
    try:
        await migrate.upgrade(conn, ready)
        return await action(conn)
    finally:
        await conn.close()


def on_database(settings: Settings, action: Callable[[db.Connection], Awaitable[T]]) -> T:
    """What ``action`` returns on a connection to the up-to-date database (an embedded one is
    started for it, and so needs its data directory not to be in use)."""
    with database(settings) as ready:
        return asyncio.run(_on_database(ready, action))
