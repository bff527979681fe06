"""Running tsapi: the database (embedded when none is configured), then the HTTP server."""

import asyncio
import contextlib
from collections.abc import Iterator

import click
import uvicorn
from pydantic import SecretStr

from tsapi import db, migrate
from tsapi.app import create_app
from tsapi.embedded import EmbeddedPostgres
from tsapi.settings import Settings, redact_url


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a running database: the configured one, or an embedded one that is
    started here and stopped on exit."""
    if settings.database_url is not None:
        click.echo(f"database: {redact_url(settings.database_url.get_secret_value())}", err=True)
        yield settings
        return
    with EmbeddedPostgres(settings.data_dir) as embedded:
        click.echo(f"database: embedded PostgreSQL, data in {embedded.pgdata}", err=True)
        yield settings.model_copy(update={"database_url": SecretStr(embedded.url)})


def serve(settings: Settings) -> None:
    with database(settings) as ready:
        config = uvicorn.Config(
            create_app(ready),
            host=ready.host,
            port=ready.port,
            log_config=None,
            access_log=False,
            server_header=False,
            lifespan="on",
        )
        click.echo(f"tsapi listening on http://{ready.host}:{ready.port}", err=True)
        uvicorn.Server(config).run()


def upgrade(settings: Settings) -> list[migrate.Migration]:
    async def run(ready: Settings) -> list[migrate.Migration]:
        conn = await db.connect(ready)
        try:
            return await migrate.upgrade(conn, ready)
        finally:
            await conn.close()

    with database(settings) as ready:
        return asyncio.run(run(ready))
